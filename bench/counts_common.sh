# SPDX-License-Identifier: MIT
# What bench/python_counts.sh and bench/c_counts.sh share: what they
# count on a server they started (how it is awaited and stopped:
# bench/common.sh, sourced here) under load with perf stat, printed per
# request: software tracepoints only (hardware counters do not work on the
# bench VMs), none of which depends on how loaded the machine is the way
# CPU time does; and its user-space instructions under callgrind.
#
#   raw_syscalls:sys_enter   every system call the server makes
#   syscalls:sys_enter_NAME  the ones an event loop's request costs, and
#                            those a connection costs (accept4, close,
#                            shutdown, setsockopt: the churn scenario,
#                            where io_uring servers accept and close by
#                            SQE instead)
#   io_uring:*               SQEs submitted, CQEs posted; deferred
#                            task-work runs (a multishot receive copies
#                            its bytes there), waits that slept
#                            (cqring_wait), poll arms and punts to a
#                            kernel worker (none on a loop's fast path)
#   context-switches         the server going to sleep (or preempted)
#   sched:sched_waking       wake-ups the server starts: a reply or a send
#                            that finds the peer asleep (wrk, loadgen) wakes
#                            it, and the server pays for it in that call
#   sched:sched_wakeup       the same wake-ups where they complete; the
#                            kernel completes a wake-up on the woken task's
#                            CPU (an IPI) when it is another CPU, which then
#                            does not count here: compare sched_waking
#   page-faults, brk, mmap,  the heap's growth: every page a grown heap
#   munmap                   touches is a fault and a zeroed page (at
#                            100 KiB more CPU than the loop's own work,
#                            bench/README.md "The 100 KiB streams echo")
#   ioctl                    FIONREAD (pact.asyncio's large sock_recv)
#   net:net_dev_xmit         segments the server's CPU sends: over loopback
#                            its replies, and any ACK sent on its own (a
#                            keep-alive reply carries the request's ACK:
#                            1 per request; more is a reply split in
#                            segments or acknowledged apart)
#   skb:skb_copy_datagram_   receive copies: 1 per request when each
#    iovec                   request is read in one piece
#   ipi:ipi_send_cpu         interrupts the server sends another CPU: a
#                            wake-up there, or the kick that has the CPU
#                            that sent a request free its buffer (skb
#                            defer list); on a VM each is an exit
. "$(dirname "${BASH_SOURCE[0]}")/common.sh" # kv_get, listening, SRV, stop, echo_mode_flags
PERF_COUNT_EVENTS=raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_epoll_pwait2,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_getpid,syscalls:sys_enter_accept4,syscalls:sys_enter_close,syscalls:sys_enter_shutdown,syscalls:sys_enter_setsockopt,syscalls:sys_enter_ioctl,syscalls:sys_enter_brk,syscalls:sys_enter_mmap,syscalls:sys_enter_munmap,page-faults,io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_local_work_run,io_uring:io_uring_cqring_wait,io_uring:io_uring_poll_arm,io_uring:io_uring_queue_async_work,context-switches,sched:sched_waking,sched:sched_wakeup,net:net_dev_xmit,skb:skb_copy_datagram_iovec,ipi:ipi_send_cpu

# perf_per_request STAT REQUESTS: each event perf stat -x, wrote to STAT
# that counted something, divided by REQUESTS
perf_per_request() {
    awk -F, -v r="$2" '$1 ~ /^[0-9]+$/ && $1 > 0 {
        name = $3; sub(/^syscalls:sys_enter_/, "", name)
        sub(/^raw_syscalls:sys_enter$/, "system calls (all)", name)
        printf "  %-30s %7.3f per request\n", name, $1 / r }' "$1"
}

# perf_attached PERF_PID: waits (at most 10 s) until the perf stat started
# with -p has its counters open on the server, so that the load that
# follows is counted whole (a fixed sleep missed the start of the load
# when perf was slow to attach, and the counts per request came out low)
perf_attached() {
    for _ in $(seq 1000); do
        ls -l "/proc/$1/fd" 2>/dev/null | grep -q 'perf_event' && return 0
        kill -0 "$1" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}

# callgrind_window LOAD WARM SECS: SRV runs under valgrind's callgrind
# (--callgrind-out-file=$TMP/cg.%p). Runs `LOAD WARM`, zeroes the
# counters, runs `LOAD SECS` (its output goes to CG_LOAD), dumps them and
# stops the server; CG_DUMP: the window's dump (callgrind_keep); CG_IR:
# the user-space instructions of that window (empty without a dump);
# CG_D1: its D1 cache misses, reads and writes, when the server ran with
# --cache-sim=yes (else empty).
callgrind_window() {
    local vpid=$SRV
    "$1" "$2" >/dev/null
    callgrind_control -z $vpid >/dev/null 2>&1
    CG_LOAD=$("$1" "$3")
    callgrind_control -d $vpid >/dev/null 2>&1
    stop
    local summary
    CG_DUMP=$TMP/cg.$vpid.1
    summary=$(sed -n 's/^summary: *//p' "$CG_DUMP" 2>/dev/null || true)
    # shellcheck disable=SC2086 # the summary's fields, in the events' order
    set -- $summary
    CG_IR=${1:-} CG_D1=
    # --cache-sim's events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
    [ $# -ge 6 ] && CG_D1=$(($5 + $6))
    return 0
}

# callgrind_keep DEST: the last callgrind_window's dump moves to DEST
# (CG_KEEP), the other dumps of the run are removed, so that one window's
# dump is never taken for another's.
callgrind_keep() {
    mv "$CG_DUMP" "$1"
    rm -f "$TMP"/cg.*
}
