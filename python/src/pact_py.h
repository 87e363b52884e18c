/* SPDX-License-Identifier: MIT */
/* The pact._pact extension: what its files share. */
#ifndef PACT_PY_H
#define PACT_PY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pact.h>

/* Objects from asyncio and the standard library the extension calls;
 * looked up once at import (module.c). */
typedef struct {
    PyObject *handle_type;       /* asyncio.events.Handle */
    PyObject *timer_handle_type; /* asyncio.events.TimerHandle */
} pact_py_imports;

extern pact_py_imports pact_py;

/* Interned attribute and method names. */
extern PyObject *pact_py_str_cancelled;       /* "_cancelled" */
extern PyObject *pact_py_str_scheduled;       /* "_scheduled" */
extern PyObject *pact_py_str_run;             /* "_run" */
extern PyObject *pact_py_str_run_handle_debug; /* "_run_handle_debug" */
extern PyObject *pact_py_str_check_thread;    /* "_check_thread" */
extern PyObject *pact_py_str_check_callback;  /* "_check_callback" */
extern PyObject *pact_py_str_source_traceback; /* "_source_traceback" */
extern PyObject *pact_py_str_context;         /* "context" */

/* The Loop type (loop.c); added to the module by module.c. */
extern PyType_Spec pact_py_loop_spec;

#endif
