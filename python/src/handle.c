/* SPDX-License-Identifier: MIT */
/* asyncio's Handle and TimerHandle, made and run from C.
 *
 * The objects are asyncio.events.Handle / TimerHandle themselves (exact
 * type), so cancel(), cancelled(), when(), get_context(), repr, equality,
 * isinstance and whatever code reaches into them behave as asyncio's. What
 * changes is the path: asyncio builds a handle through its Python
 * __init__ (nine attribute stores and a loop.get_debug() call) and runs it
 * through Handle._run (Context.run with *args); here the __slots__ are
 * filled and read in place, at the offsets their member descriptors
 * publish, and the callback is called inside its context with
 * PyContext_Enter/Exit. Debug mode keeps asyncio's Python path (it records
 * the creation traceback and times callbacks). Handles of any other type
 * (a subclass, or one Python code queued) go through their Python methods.
 */
#include "pact_py.h"

#include <structmember.h>

/* Offsets of the __slots__ of asyncio.events.Handle and TimerHandle. */
static Py_ssize_t off_callback, off_args, off_cancelled, off_loop,
    off_source_traceback, off_repr, off_context, off_when, off_scheduled;
static PyTypeObject *handle_type, *timer_handle_type;
/* pact.asyncio._loop._report_callback_error, imported on first use. */
static PyObject *report_error;

#define SLOT(o, off) (*(PyObject **)((char *)(o) + (off)))

static void slot_set(PyObject *o, Py_ssize_t off, PyObject *v)
{
    PyObject *old = SLOT(o, off);
    SLOT(o, off) = Py_NewRef(v);
    Py_XDECREF(old);
}

static int member_offset(PyObject *type, const char *name, Py_ssize_t *off)
{
    PyObject *d = PyObject_GetAttrString(type, name);
    if (!d)
        return -1;
    int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) &&
             ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
    if (ok)
        *off = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    if (!ok) {
        PyErr_Format(PyExc_ImportError,
                     "asyncio.%s.%s is not a __slots__ member: this asyncio "
                     "is not the one pact.asyncio was written for",
                     ((PyTypeObject *)type)->tp_name, name);
        return -1;
    }
    return 0;
}

int pact_py_handles_init(void)
{
    handle_type = (PyTypeObject *)pact_py.handle_type;
    timer_handle_type = (PyTypeObject *)pact_py.timer_handle_type;
    PyObject *h = pact_py.handle_type, *t = pact_py.timer_handle_type;
    if (member_offset(h, "_callback", &off_callback) < 0 ||
        member_offset(h, "_args", &off_args) < 0 ||
        member_offset(h, "_cancelled", &off_cancelled) < 0 ||
        member_offset(h, "_loop", &off_loop) < 0 ||
        member_offset(h, "_source_traceback", &off_source_traceback) < 0 ||
        member_offset(h, "_repr", &off_repr) < 0 ||
        member_offset(h, "_context", &off_context) < 0 ||
        member_offset(t, "_when", &off_when) < 0 ||
        member_offset(t, "_scheduled", &off_scheduled) < 0)
        return -1;
    return 0;
}

/* What Handle.__init__ stores, without running it. */
static PyObject *handle_fill(PyObject *h, LoopObject *loop, PyObject *callback,
                             PyObject *args, PyObject *context)
{
    if (context == Py_None) {
        context = PyContext_CopyCurrent();
        if (!context) {
            Py_DECREF(h);
            return NULL;
        }
        SLOT(h, off_context) = context;
    } else {
        SLOT(h, off_context) = Py_NewRef(context);
    }
    SLOT(h, off_loop) = Py_NewRef((PyObject *)loop);
    SLOT(h, off_callback) = Py_NewRef(callback);
    SLOT(h, off_args) = Py_NewRef(args);
    SLOT(h, off_cancelled) = Py_NewRef(Py_False);
    SLOT(h, off_repr) = Py_NewRef(Py_None);
    SLOT(h, off_source_traceback) = Py_NewRef(Py_None);
    return h;
}

PyObject *pact_py_handle_new(LoopObject *loop, PyObject *callback,
                             PyObject *args, PyObject *context)
{
    if (loop->debug) {
        PyObject *argv[4] = {callback, args, (PyObject *)loop, context};
        return PyObject_Vectorcall((PyObject *)handle_type, argv, 4, NULL);
    }
    PyObject *h = handle_type->tp_alloc(handle_type, 0);
    if (!h)
        return NULL;
    return handle_fill(h, loop, callback, args, context);
}

PyObject *pact_py_timer_handle_new(LoopObject *loop, PyObject *when,
                                   PyObject *callback, PyObject *args,
                                   PyObject *context)
{
    if (loop->debug) {
        PyObject *argv[5] = {when, callback, args, (PyObject *)loop, context};
        return PyObject_Vectorcall((PyObject *)timer_handle_type, argv, 5, NULL);
    }
    PyObject *h = timer_handle_type->tp_alloc(timer_handle_type, 0);
    if (!h)
        return NULL;
    if (!handle_fill(h, loop, callback, args, context))
        return NULL;
    SLOT(h, off_when) = Py_NewRef(when);
    SLOT(h, off_scheduled) = Py_NewRef(Py_False);
    return h;
}

static int is_ours(PyObject *h)
{
    return Py_IS_TYPE(h, handle_type) || Py_IS_TYPE(h, timer_handle_type);
}

int pact_py_handle_cancelled(PyObject *h)
{
    if (is_ours(h)) {
        PyObject *v = SLOT(h, off_cancelled);
        if (v == Py_False)
            return 0;
        if (v == Py_True)
            return 1;
        if (v)
            return PyObject_IsTrue(v);
    }
    PyObject *v = PyObject_GetAttr(h, pact_py_str_cancelled);
    if (!v)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

int pact_py_timer_set_scheduled(PyObject *h, int scheduled)
{
    PyObject *v = scheduled ? Py_True : Py_False;
    if (Py_IS_TYPE(h, timer_handle_type)) {
        slot_set(h, off_scheduled, v);
        return 0;
    }
    return PyObject_SetAttr(h, pact_py_str_scheduled, v);
}

int pact_py_timer_scheduled(PyObject *h)
{
    if (Py_IS_TYPE(h, timer_handle_type)) {
        PyObject *v = SLOT(h, off_scheduled);
        if (v == Py_True)
            return 1;
        if (v == Py_False)
            return 0;
    }
    PyObject *v = PyObject_GetAttr(h, pact_py_str_scheduled);
    if (!v)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* The except branch of Handle._run: SystemExit and KeyboardInterrupt go
 * on up, anything else goes to the loop's exception handler (written in
 * Python, as asyncio's, in pact/asyncio/_loop.py). */
static int callback_failed(PyObject *h)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
        PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return -1;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    if (tb)
        PyException_SetTraceback(ev, tb);
    Py_XDECREF(et);
    Py_XDECREF(tb);
    if (!report_error) {
        PyObject *mod = PyImport_ImportModule("pact.asyncio._loop");
        if (mod) {
            report_error = PyObject_GetAttrString(mod, "_report_callback_error");
            Py_DECREF(mod);
        }
        if (!report_error) {
            Py_DECREF(ev);
            return -1;
        }
    }
    PyObject *r = PyObject_CallFunctionObjArgs(report_error, h, ev, NULL);
    Py_DECREF(ev);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

int pact_py_report_as_handle(LoopObject *loop, PyObject *callback,
                             PyObject *args, PyObject *context)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
        PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return -1;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *h = pact_py_handle_new(loop, callback, args, context);
    if (!h) {
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        return -1;
    }
    PyErr_Restore(et, ev, tb);
    int r = callback_failed(h);
    Py_DECREF(h);
    return r;
}

int pact_py_handle_run(LoopObject *loop, PyObject *h)
{
    PyObject *r;
    if (loop->debug) {
        r = PyObject_CallMethodOneArg((PyObject *)loop,
                                      pact_py_str_run_handle_debug, h);
    } else if (is_ours(h) && SLOT(h, off_args) &&
               PyTuple_CheckExact(SLOT(h, off_args)) && SLOT(h, off_callback) &&
               SLOT(h, off_context) && PyContext_CheckExact(SLOT(h, off_context))) {
        /* References of our own: the callback may cancel its handle,
         * which drops _callback and _args. */
        PyObject *callback = Py_NewRef(SLOT(h, off_callback));
        PyObject *args = Py_NewRef(SLOT(h, off_args));
        PyObject *context = Py_NewRef(SLOT(h, off_context));
        if (PyContext_Enter(context) < 0) {
            r = NULL;
        } else {
            r = PyObject_Vectorcall(callback, &PyTuple_GET_ITEM(args, 0),
                                    (size_t)PyTuple_GET_SIZE(args), NULL);
            if (PyContext_Exit(context) < 0)
                Py_CLEAR(r);
        }
        Py_DECREF(callback);
        Py_DECREF(args);
        Py_DECREF(context);
        if (!r)
            return callback_failed(h);
    } else {
        r = PyObject_CallMethodNoArgs(h, pact_py_str_run);
    }
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}
