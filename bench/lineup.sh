# SPDX-License-Identifier: MIT
# The C contenders and scenarios of bench/: sourced by bench/run.sh (make
# bench) and bench/c_counts.sh, so both start a contender and load it the
# same way.

# Peers first, then pact.
ECHO_PEERS=(raw_uring raw_epoll libuv_fast libuv_example)
ECHO_PACT=(pact_stream_uring pact_stream_uring_copy pact_stream_epoll pact_uring pact_epoll)
HTTP_PEERS=(http_raw_uring http_raw_epoll http_libuv)
HTTP_PACT=(http_pact_uring http_pact_epoll)

# contender_cmd DIR NAME PORT: the command line that starts contender NAME
# on PORT, from the programs built in DIR (BUILD/bench).
contender_cmd() {
    local dir=$1 who=$2 port=$3
    case $who in
    raw_uring) echo "$dir/raw_uring $port" ;;
    raw_epoll) echo "$dir/raw_epoll $port" ;;
    libuv_fast) echo "$dir/libuv_fast_echo $port" ;;
    libuv_example) echo "$dir/libuv_echo $port" ;;
    pact_uring) echo "$dir/pact_echo $port --engine uring" ;;
    pact_epoll) echo "$dir/pact_echo $port --engine epoll" ;;
    pact_stream_uring) echo "$dir/pact_stream_echo $port --engine uring" ;;
    pact_stream_uring_copy) echo "$dir/pact_stream_echo $port --engine uring --write copy" ;;
    pact_stream_epoll) echo "$dir/pact_stream_echo $port --engine epoll" ;;
    http_raw_uring) echo "$dir/http_raw_uring $port" ;;
    http_raw_epoll) echo "$dir/http_raw_epoll $port" ;;
    http_libuv) echo "$dir/http_libuv $port" ;;
    http_pact_uring) echo "$dir/http_pact $port --engine uring" ;;
    http_pact_epoll) echo "$dir/http_pact $port --engine epoll" ;;
    *) echo "bench: unknown contender $who" >&2; return 1 ;;
    esac
}

# name|loadgen arguments
SCENARIOS=(
    "pp64_c1|--conns 1 --size 64"
    "pp64_c50|--conns 50 --size 64"
    "pp64_c500|--conns 500 --size 64"
    "pp16k_c50|--conns 50 --size 16384"
    "stream64k_c10|--conns 10 --size 65536 --window 4"
    "churn_c100|--conns 100 --size 64 --mode churn"
)
# name|wrk connections (one wrk thread: the load generator gets one CPU)
HTTP_SCENARIOS=(
    "http_c50|50"
    "http_c500|500"
)
