/* SPDX-License-Identifier: MIT */
/* pact._pact: module setup. The types live in one file each (loop.c). */
#include "pact_py.h"

#include <string.h>

pact_py_imports pact_py;
PyTypeObject *pact_py_loop_type;

PyObject *pact_py_str_cancelled;
PyObject *pact_py_str_scheduled;
PyObject *pact_py_str_run;
PyObject *pact_py_str_run_handle_debug;
PyObject *pact_py_str_check_thread;
PyObject *pact_py_str_check_callback;
PyObject *pact_py_str_source_traceback;
PyObject *pact_py_str_context;

int pact_py_intern_names(const pact_py_name *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].name);
        if (!*names[i].slot)
            return -1;
    }
    return 0;
}

PyObject *pact_py_add_type(PyObject *module, PyType_Spec *spec, PyObject *bases)
{
    PyObject *type = PyType_FromModuleAndSpec(module, spec, bases);
    if (!type)
        return NULL;
    const char *dot = strrchr(spec->name, '.');
    if (PyModule_AddObjectRef(module, dot ? dot + 1 : spec->name, type) < 0) {
        Py_DECREF(type);
        return NULL;
    }
    return type;
}

static int intern_names(void)
{
    static const pact_py_name names[] = {
        {&pact_py_str_cancelled, "_cancelled"},
        {&pact_py_str_scheduled, "_scheduled"},
        {&pact_py_str_run, "_run"},
        {&pact_py_str_run_handle_debug, "_run_handle_debug"},
        {&pact_py_str_check_thread, "_check_thread"},
        {&pact_py_str_check_callback, "_check_callback"},
        {&pact_py_str_source_traceback, "_source_traceback"},
        {&pact_py_str_context, "context"},
    };
    return pact_py_intern_names(names, sizeof names / sizeof names[0]);
}

/* asyncio's own Handle and TimerHandle: their semantics (cancel, repr,
 * contexts, exception reporting, debug tracebacks) are exactly what
 * asyncio users and its tests expect. */
static int import_asyncio(void)
{
    PyObject *events = PyImport_ImportModule("asyncio.events");
    if (!events)
        return -1;
    pact_py.handle_type = PyObject_GetAttrString(events, "Handle");
    pact_py.timer_handle_type = PyObject_GetAttrString(events, "TimerHandle");
    Py_DECREF(events);
    if (!pact_py.handle_type || !pact_py.timer_handle_type)
        return -1;
    PyObject *futures = PyImport_ImportModule("asyncio.futures");
    if (!futures)
        return -1;
    pact_py.future_type = PyObject_GetAttrString(futures, "Future");
    Py_DECREF(futures);
    PyObject *tasks = PyImport_ImportModule("asyncio.tasks");
    if (!tasks)
        return -1;
    pact_py.task_type = PyObject_GetAttrString(tasks, "Task");
    Py_DECREF(tasks);
    PyObject *base = PyImport_ImportModule("asyncio.base_events");
    if (!base)
        return -1;
    PyObject *cls = PyObject_GetAttrString(base, "BaseEventLoop");
    Py_DECREF(base);
    if (!cls)
        return -1;
    pact_py.base_create_task = PyObject_GetAttrString(cls, "create_task");
    Py_DECREF(cls);
    if (!pact_py.future_type || !pact_py.task_type || !pact_py.base_create_task)
        return -1;
    return pact_py_handles_init();
}

static struct PyModuleDef pact_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pact._pact",
    .m_doc = "The C core of pact.asyncio (a CPython binding of the pact "
             "event loop library).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__pact(void)
{
    if (intern_names() < 0 || import_asyncio() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&pact_module);
    if (!m)
        return NULL;
    pact_py_loop_type = (PyTypeObject *)pact_py_add_type(m, &pact_py_loop_spec,
                                                         NULL);
    if (!pact_py_loop_type || pact_py_transport_init(m) < 0 ||
        pact_py_datagram_init(m) < 0 || pact_py_server_init(m) < 0 ||
        pact_py_sock_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
