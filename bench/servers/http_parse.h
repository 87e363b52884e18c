/* SPDX-License-Identifier: MIT */
/* The minimal HTTP/1.1 request framing shared by every hello-world server
 * in the wrk scenario (http_*.c), so they all parse the same way and differ
 * only in the event loop underneath.
 *
 * http_request_length() finds where one request ends: the request line and
 * headers up to the blank line, plus a Content-Length body. It answers
 * whether the connection stays open after it (HTTP/1.1 keeps it unless
 * "Connection: close"; HTTP/1.0 closes unless "Connection: keep-alive").
 * Pipelined requests are handled by calling it again on what follows.
 * Refused (HTTP_BAD): no "HTTP/1.x" version, a header section above
 * HTTP_MAX_HEAD bytes, a malformed or oversized Content-Length, and
 * Transfer-Encoding (no chunked bodies in a hello-world server); the
 * server then answers 400 and closes.
 *
 * Every server answers every request with the same fixed response
 * (HTTP_RESPONSE), without a Date header so no server pays for clocks.
 */
#ifndef BENCH_HTTP_PARSE_H
#define BENCH_HTTP_PARSE_H
#include <stddef.h>
#include <string.h>
#include <strings.h>

#define HTTP_MAX_HEAD 8192
#define HTTP_MAX_BODY 4096 /* head + body fit a 16 KiB buffer */

#define HTTP_RESPONSE                                                          \
    "HTTP/1.1 200 OK\r\n"                                                      \
    "Content-Type: text/plain\r\n"                                             \
    "Content-Length: 13\r\n"                                                   \
    "\r\n"                                                                     \
    "Hello, World!"
#define HTTP_RESPONSE_LEN (sizeof HTTP_RESPONSE - 1)
#define HTTP_BAD_REQUEST                                                       \
    "HTTP/1.1 400 Bad Request\r\n"                                             \
    "Content-Length: 0\r\n"                                                    \
    "Connection: close\r\n"                                                    \
    "\r\n"
#define HTTP_BAD_REQUEST_LEN (sizeof HTTP_BAD_REQUEST - 1)

enum { HTTP_NEED_MORE = 0, HTTP_BAD = -1 };

/* Does header line [p, end) name `name` (case-insensitive)? Then *value
 * points at its value with surrounding blanks trimmed. */
static int http_header_is(const char *p, const char *end, const char *name,
                          const char **value, size_t *value_len)
{
    size_t n = strlen(name);
    if ((size_t)(end - p) <= n || p[n] != ':' || strncasecmp(p, name, n) != 0)
        return 0;
    const char *v = p + n + 1;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    const char *ve = end;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
    *value = v;
    *value_len = (size_t)(ve - v);
    return 1;
}

static int http_token_in(const char *v, size_t len, const char *token)
{
    /* Connection is a comma list: "keep-alive", "close", "Upgrade, close". */
    size_t tl = strlen(token);
    for (size_t i = 0; i < len;) {
        while (i < len && (v[i] == ' ' || v[i] == ',' || v[i] == '\t'))
            i++;
        size_t j = i;
        while (j < len && v[j] != ',')
            j++;
        size_t e = j;
        while (e > i && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - i == tl && strncasecmp(v + i, token, tl) == 0)
            return 1;
        i = j;
    }
    return 0;
}

/* Returns the length of the first complete request in buf[0, len), or
 * HTTP_NEED_MORE, or HTTP_BAD. *keep_alive says whether the connection
 * stays open after answering it. */
static long http_request_length(const char *buf, size_t len, int *keep_alive)
{
    size_t scan = len < HTTP_MAX_HEAD ? len : HTTP_MAX_HEAD;
    const char *head_end = memmem(buf, scan, "\r\n\r\n", 4);
    if (!head_end)
        return len >= HTTP_MAX_HEAD ? HTTP_BAD : HTTP_NEED_MORE;
    size_t head_len = (size_t)(head_end - buf) + 4;

    /* Request line: METHOD SP TARGET SP HTTP/1.x */
    const char *eol = memchr(buf, '\r', head_len);
    if (eol[1] != '\n')
        return HTTP_BAD;
    const char *sp1 = memchr(buf, ' ', (size_t)(eol - buf));
    if (!sp1 || sp1 == buf)
        return HTTP_BAD;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (!sp2 || sp2 == sp1 + 1 || eol - sp2 - 1 != 8 ||
        memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
        (sp2[8] != '0' && sp2[8] != '1'))
        return HTTP_BAD;
    int http11 = sp2[8] == '1';
    int ka = http11;

    size_t body = 0;
    for (const char *p = eol + 2; p < head_end;) {
        const char *le = memchr(p, '\r', (size_t)(head_end + 2 - p));
        if (!le || le[1] != '\n')
            return HTTP_BAD;
        const char *v;
        size_t vl;
        if (http_header_is(p, le, "Content-Length", &v, &vl)) {
            if (vl == 0 || vl > 7)
                return HTTP_BAD;
            body = 0;
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return HTTP_BAD;
                body = body * 10 + (size_t)(v[i] - '0');
            }
            if (body > HTTP_MAX_BODY)
                return HTTP_BAD;
        } else if (http_header_is(p, le, "Transfer-Encoding", &v, &vl)) {
            return HTTP_BAD;
        } else if (http_header_is(p, le, "Connection", &v, &vl)) {
            if (http_token_in(v, vl, "close"))
                ka = 0;
            else if (http_token_in(v, vl, "keep-alive"))
                ka = 1;
        }
        p = le + 2;
    }
    if (len - head_len < body)
        return HTTP_NEED_MORE;
    *keep_alive = ka;
    return (long)(head_len + body);
}

/* Frames every complete request in buf[0, len): *answers is how many get
 * HTTP_RESPONSE, *close_after is set when the connection closes after them
 * (Connection: close, HTTP/1.0, or a bad request: then *bad is set and a
 * 400 goes after the answers). Returns the bytes consumed; the rest is the
 * start of an incomplete request to keep for the next read. */
static size_t http_frame(const char *buf, size_t len, unsigned *answers,
                         int *close_after, int *bad)
{
    size_t off = 0;
    *answers = 0;
    *close_after = 0;
    *bad = 0;
    while (off < len) {
        int ka = 1;
        long n = http_request_length(buf + off, len - off, &ka);
        if (n == HTTP_NEED_MORE)
            break;
        if (n == HTTP_BAD) {
            *bad = 1;
            *close_after = 1;
            return len;
        }
        (*answers)++;
        off += (size_t)n;
        if (!ka) {
            *close_after = 1;
            return len; /* nothing after a close is answered */
        }
    }
    return off;
}

/* Answers to pipelined requests are HTTP_RESPONSE repeated, so byte o of
 * the answer stream is http_batch[o % HTTP_RESPONSE_LEN + ...]: a server
 * that owes n answers sends straight from this static buffer and keeps
 * only a byte count, whatever a short write leaves over. */
#define HTTP_BATCH 64
static char http_batch[HTTP_BATCH * HTTP_RESPONSE_LEN];

static void http_batch_init(void)
{
    for (size_t i = 0; i < HTTP_BATCH; i++)
        memcpy(http_batch + i * HTTP_RESPONSE_LEN, HTTP_RESPONSE,
               HTTP_RESPONSE_LEN);
}

/* The next contiguous piece of an answer stream that is `owed` bytes long
 * and of which `sent` bytes went out already. */
static const char *http_batch_piece(unsigned long long sent,
                                    unsigned long long owed, size_t *len)
{
    size_t start = (size_t)(sent % HTTP_RESPONSE_LEN);
    unsigned long long left = owed - sent;
    size_t room = sizeof http_batch - start;
    *len = left < room ? (size_t)left : room;
    return http_batch + start;
}

#endif
