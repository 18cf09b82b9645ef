/*
 * lunar/http.h — the HTTP/1.1 + HTTP/2 server glue over libh2o (evloop), driven by Lua.
 *
 * One event-loop thread (the caller of lunar_http_run) accepts connections — HTTP/1.1,
 * HTTP/2 over cleartext (prior knowledge and Upgrade: h2c) and over TLS with ALPN h2 — and
 * hands every request to on_request on that same thread, where the Lua handlers run. A
 * handler answers at once (lunar_http_respond) or later: after engine events, from on_wake,
 * possibly as a stream of chunks (Server-Sent Events) with back-pressure handled here.
 *
 * Lifetimes: a lunar_http_req_t lives until it is answered completely or its client goes
 * away; in both cases on_closed(ud, req, client_gone) runs exactly once and the pointer is dead
 * after it returns. Other threads (the engine) talk to the loop only through
 * lunar_http_wake(), which coalesces wake-ups into one on_wake call on the loop thread.
 */
#ifndef LUNAR_HTTP_H
#define LUNAR_HTTP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lunar_http_server lunar_http_server_t;
typedef struct lunar_http_req lunar_http_req_t;

typedef struct lunar_http_config {
    const char *host;              /* "0.0.0.0" by default */
    int port;                      /* 8000 by default */
    const char *ssl_certfile;      /* both set: TLS with ALPN h2 and http/1.1 */
    const char *ssl_keyfile;
    size_t max_request_body;       /* bytes; larger bodies get 413 (default 32 MiB) */
    double shutdown_timeout_s;     /* after SIGINT/SIGTERM, wait this long for in-flight requests */
    /* callbacks, all on the loop thread */
    void (*on_request)(void *ud, lunar_http_req_t *req);
    void (*on_closed)(void *ud, lunar_http_req_t *req, int client_gone);
    void (*on_wake)(void *ud);
    void (*on_shutdown)(void *ud); /* a signal asked the server to stop: stop admitting work */
    void *ud;
} lunar_http_config_t;

void lunar_http_config_default(lunar_http_config_t *c);

/* Binds and listens (errors name the address). Free with lunar_http_free(). */
int lunar_http_create(const lunar_http_config_t *c, lunar_http_server_t **out);
/* Runs the loop until shutdown completes: a SIGINT/SIGTERM (installed here) or
 * lunar_http_shutdown(), then in-flight requests finish (or the timeout passes). Returns 0. */
int lunar_http_run(lunar_http_server_t *s);
/* From any thread, also a signal handler: begin the graceful shutdown. */
void lunar_http_shutdown(lunar_http_server_t *s);
/* From any thread: on_wake will run once on the loop thread. Matches the engine's notify
 * callback signature (pass the server as its argument). */
void lunar_http_wake(void *server);
void lunar_http_free(lunar_http_server_t *s);
/* The port actually bound (useful with port 0). */
int lunar_http_port(const lunar_http_server_t *s);
/* Requests accepted and not yet closed. */
int lunar_http_inflight(const lunar_http_server_t *s);

/* ---- a request (loop thread only) ---- */
uint64_t lunar_http_req_id(const lunar_http_req_t *r);
/* Method, path (without query), query string ("" if none), body: pointers valid while the
 * request lives; *len gets the length. */
const char *lunar_http_req_method(const lunar_http_req_t *r, size_t *len);
const char *lunar_http_req_path(const lunar_http_req_t *r, size_t *len);
const char *lunar_http_req_query(const lunar_http_req_t *r, size_t *len);
const char *lunar_http_req_body(const lunar_http_req_t *r, size_t *len);
/* 0 when the body is valid UTF-8; else -1 and *bad = the offset of the first invalid byte. */
int lunar_http_req_body_utf8(const lunar_http_req_t *r, size_t *bad);
/* A request header by lower-case name, or NULL. */
const char *lunar_http_req_header(const lunar_http_req_t *r, const char *name, size_t *len);
/* "HTTP/1.1", "HTTP/2" */
const char *lunar_http_req_protocol(const lunar_http_req_t *r);
const char *lunar_http_req_peer(const lunar_http_req_t *r); /* "127.0.0.1:53211" */

/* A whole response (body copied). headers: "Name: value\r\n" lines or NULL. */
int lunar_http_respond(lunar_http_req_t *r, int status, const char *content_type, const char *body, size_t len,
                       const char *headers);
/* A streamed response: start it, write chunks (copied; sent as soon as the connection takes
 * them), end it. Writing to a request whose client left returns LUNAR_ESTATE. */
int lunar_http_stream_start(lunar_http_req_t *r, int status, const char *content_type, const char *headers);
int lunar_http_stream_write(lunar_http_req_t *r, const char *data, size_t len);
int lunar_http_stream_end(lunar_http_req_t *r);

#ifdef __cplusplus
}
#endif
#endif /* LUNAR_HTTP_H */
