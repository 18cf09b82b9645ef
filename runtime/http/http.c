/*
 * http.c — lunar/http.h over libh2o's evloop build (Debian's libh2o-evloop 2.2.5).
 *
 * Shaped after h2o's examples/libh2o/simple.c: one h2o context on one event loop, one
 * catch-all handler that hands requests to the embedder (Lua). What h2o gives us: HTTP/1.1,
 * HTTP/2 by prior knowledge and by Upgrade (its http1 code switches on the preface or the
 * header), TLS with ALPN, request bodies buffered up to max_request_entity_size (413 past
 * it). What we add: a request wrapper allocated from the request's pool with a dispose hook,
 * so the embedder learns exactly once when a request is over — answered, or its client gone —
 * even when no response was started; a streaming generator that queues chunks while a send is
 * in flight (h2o allows one at a time); a coalescing cross-thread wake-up on the context's
 * multithread queue for engine events; a self-pipe for SIGINT/SIGTERM, since a signal
 * handler may only write(2); and a watch on HTTP/1 clients waiting for a response: h2o 2.2 stops
 * reading an HTTP/1 socket while its request is handled, so a client that hangs up on a
 * non-streaming request goes unnoticed (HTTP/2 sees RST_STREAM) and its generation would run
 * to the end. Twice a second the sockets of unanswered HTTP/1 requests are peeked; EOF or a
 * reset ends the request as if the client were gone (vLLM cancels such requests too).
 */
#include "lunar/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "h2o.h"
#include "h2o/http1.h"
#include "h2o/http2.h"

#include "core/error.h"
#include "lunar.h"
#include "tokenizer/tok.h"

struct lunar_http_server {
    lunar_http_config_t cfg;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    h2o_socket_t *sigsock;
    int sigpipe[2];
    h2o_multithread_receiver_t wake_receiver;
    h2o_multithread_message_t wake_msg;
    int wake_pending;             /* atomic: wake_msg is queued */
    int stopping;
    struct timespec deadline;
    int inflight;
    int open_conns;               /* accepted connections not yet closed (socket on_close) */
    int port;
    uint64_t next_id;
    int ctx_ready, ran;
    h2o_linklist_t waiting;       /* lunar_http_req_t.link: requests not yet answered */
    h2o_timeout_t watch_timeout;  /* WATCH_MS: peeks the HTTP/1 sockets of `waiting` */
    h2o_timeout_entry_t watch_entry;
    int watch_ready;
};

#define WATCH_MS 500

typedef struct {
    h2o_handler_t super;
    lunar_http_server_t *server;
} handler_t;

struct lunar_http_req {
    h2o_generator_t gen;          /* first: the generator callbacks find us from it */
    h2o_req_t *req;
    lunar_http_server_t *server;
    uint64_t id;
    int responded;                /* a response was started */
    int done;                     /* the final bytes were handed to h2o */
    int client_gone;
    int closed;                   /* on_closed has run */
    int sending;                  /* an h2o_send is in flight */
    int end_requested;
    char *inflight;               /* bytes of the send in flight */
    char *pending;                /* bytes queued behind it */
    size_t pending_len, pending_cap;
    char peer[NI_MAXHOST + NI_MAXSERV + 2];
    char *path, *query;
    h2o_linklist_t link;          /* in server->waiting until answered or closed */
};

/* The one server signals reach; set while lunar_http_run runs. */
static lunar_http_server_t *signal_target;

void lunar_http_config_default(lunar_http_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->host = "0.0.0.0";
    c->port = 8000;
    c->max_request_body = 32u << 20;
    c->shutdown_timeout_s = 30;
}

/* ---- requests ---------------------------------------------------------------------------- */
static void req_dispose(void *p)
{
    lunar_http_req_t *r = p;
    if (h2o_linklist_is_linked(&r->link)) h2o_linklist_unlink(&r->link);
    if (!r->closed) {
        r->closed = 1;
        r->server->inflight--;
        if (r->server->cfg.on_closed) r->server->cfg.on_closed(r->server->cfg.ud, r, !r->done || r->client_gone);
    }
    free(r->inflight);
    free(r->pending);
    free(r->path);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    lunar_http_server_t *s = ((handler_t *)self)->server;
    if (s->stopping) {
        req->res.status = 503;
        req->res.reason = "Service Unavailable";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
        h2o_send_inline(req, H2O_STRLIT("{\"error\":{\"message\":\"the server is shutting down\",\"type\":"
                                        "\"ServiceUnavailableError\",\"param\":null,\"code\":503}}"));
        return 0;
    }
    lunar_http_req_t *r = h2o_mem_alloc_shared(&req->pool, sizeof *r, req_dispose);
    memset(r, 0, sizeof *r);
    r->req = req;
    r->server = s;
    r->id = ++s->next_id;
    /* the path as sent (decoded form), split from its query */
    size_t n = req->path.len;
    r->path = malloc(n + 2);
    if (r->path) {
        memcpy(r->path, req->path.base, n);
        r->path[n] = 0;
        char *q = strchr(r->path, '?');
        if (q) {
            *q = 0;
            r->query = q + 1;
        } else {
            r->query = r->path + n; /* "" */
        }
    }
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_peername ? req->conn->callbacks->get_peername(req->conn, (void *)&ss) : 0;
    if (sl > 0) {
        char host[NI_MAXHOST], serv[NI_MAXSERV];
        if (getnameinfo((void *)&ss, sl, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) == 0)
            snprintf(r->peer, sizeof r->peer, "%s:%s", host, serv);
    }
    s->inflight++;
    if (req->version < 0x200) {
        h2o_linklist_insert(&s->waiting, &r->link);
        if (!h2o_timeout_is_linked(&s->watch_entry)) h2o_timeout_link(s->ctx.loop, &s->watch_timeout, &s->watch_entry);
    }
    s->cfg.on_request(s->cfg.ud, r);
    return 0;
}

static void set_headers(lunar_http_req_t *r, int status, const char *content_type, const char *headers);

/* The client of an unanswered HTTP/1 request hung up (EOF or an error on its socket; data is
 * a pipelined request and keeps it). A client that only shut its write side looks the same,
 * as it does to uvicorn under vLLM. */
static int client_hung_up(lunar_http_req_t *r)
{
    h2o_conn_t *conn = r->req->conn;
    h2o_socket_t *sock = conn->callbacks->get_socket ? conn->callbacks->get_socket(conn) : NULL;
    int fd = sock ? h2o_socket_get_fd(sock) : -1;
    if (fd < 0) return 0;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void on_watch(h2o_timeout_entry_t *entry)
{
    lunar_http_server_t *s = H2O_STRUCT_FROM_MEMBER(lunar_http_server_t, watch_entry, entry);
    h2o_linklist_t *node = s->waiting.next;
    while (node != &s->waiting) {
        lunar_http_req_t *r = H2O_STRUCT_FROM_MEMBER(lunar_http_req_t, link, node);
        node = node->next; /* r leaves the list below */
        if (r->responded || r->closed || !client_hung_up(r)) continue;
        h2o_linklist_unlink(&r->link);
        /* the embedder learns first (it aborts the request's work and answers nothing more),
         * then h2o gets a final response so it can close the connection and free the request */
        r->client_gone = 1;
        r->closed = 1;
        s->inflight--;
        if (s->cfg.on_closed) s->cfg.on_closed(s->cfg.ud, r, 1);
        r->responded = r->done = 1;
        r->req->http1_is_persistent = 0;
        static const char body[] = "{\"error\":{\"message\":\"the client closed the connection\",\"type\":"
                                   "\"ClientClosedRequest\",\"param\":null,\"code\":499}}";
        set_headers(r, 499, "application/json", NULL);
        r->req->res.content_length = sizeof body - 1;
        h2o_send_inline(r->req, body, sizeof body - 1);
    }
    if (!h2o_linklist_is_empty(&s->waiting)) h2o_timeout_link(s->ctx.loop, &s->watch_timeout, &s->watch_entry);
}

uint64_t lunar_http_req_id(const lunar_http_req_t *r) { return r->id; }

const char *lunar_http_req_method(const lunar_http_req_t *r, size_t *len)
{
    if (len) *len = r->req->method.len;
    return r->req->method.base;
}

const char *lunar_http_req_path(const lunar_http_req_t *r, size_t *len)
{
    const char *p = r->path ? r->path : "/";
    if (len) *len = strlen(p);
    return p;
}

const char *lunar_http_req_query(const lunar_http_req_t *r, size_t *len)
{
    const char *q = r->query ? r->query : "";
    if (len) *len = strlen(q);
    return q;
}

const char *lunar_http_req_body(const lunar_http_req_t *r, size_t *len)
{
    if (len) *len = r->req->entity.base ? r->req->entity.len : 0;
    return r->req->entity.base ? r->req->entity.base : "";
}

int lunar_http_req_body_utf8(const lunar_http_req_t *r, size_t *bad)
{
    size_t len, at = 0;
    const char *body = lunar_http_req_body(r, &len);
    int rc = tk_utf8_check(body, len, &at); /* the tokenizer's check: one definition of valid */
    if (bad) *bad = rc ? at : 0;
    return rc ? -1 : 0;
}

const char *lunar_http_req_header(const lunar_http_req_t *r, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < r->req->headers.size; i++) {
        h2o_header_t *h = &r->req->headers.entries[i];
        if (h->name->len == nl && h2o_lcstris(h->name->base, h->name->len, name, nl)) {
            if (len) *len = h->value.len;
            return h->value.base;
        }
    }
    return NULL;
}

const char *lunar_http_req_protocol(const lunar_http_req_t *r)
{
    return r->req->version >= 0x200 ? "HTTP/2" : (r->req->version == 0x100 ? "HTTP/1.0" : "HTTP/1.1");
}

const char *lunar_http_req_peer(const lunar_http_req_t *r) { return r->peer; }

/* HTTP/1.1 reason phrases of the statuses the server sends (clients show them in errors) */
static const char *reason_of(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "";
    }
}

static void set_headers(lunar_http_req_t *r, int status, const char *content_type, const char *headers)
{
    h2o_req_t *req = r->req;
    req->res.status = status;
    req->res.reason = reason_of(status);
    if (content_type)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
    /* "Name: value\r\n" lines */
    for (const char *p = headers; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        const char *colon = memchr(p, ':', ll);
        if (colon && colon > p) {
            const char *v = colon + 1;
            while (v < p + ll && *v == ' ') v++;
            h2o_iovec_t name = h2o_strdup(&req->pool, p, (size_t)(colon - p));
            h2o_strtolower(name.base, name.len);
            h2o_iovec_t value = h2o_strdup(&req->pool, v, (size_t)(p + ll - v));
            h2o_add_header_by_str(&req->pool, &req->res.headers, name.base, name.len, 1, NULL, value.base, value.len);
        }
        p = eol ? eol + 2 : p + ll;
    }
}

int lunar_http_respond(lunar_http_req_t *r, int status, const char *content_type, const char *body, size_t len,
                       const char *headers)
{
    if (r->closed || r->responded) return lunar_error(LUNAR_ESTATE, "request %llu already answered", (unsigned long long)r->id);
    r->responded = 1;
    r->done = 1;
    if (h2o_linklist_is_linked(&r->link)) h2o_linklist_unlink(&r->link);
    set_headers(r, status, content_type, headers);
    /* with its length known h2o writes Content-Length; without it h2o 2.2 can frame only a 200
     * (chunked) and closes an HTTP/1.1 connection after any other status, dropping the requests
     * a client pipelined or kept alive behind an error */
    r->req->res.content_length = len;
    h2o_send_inline(r->req, body, len); /* copies the body; the request may be gone on return */
    return 0;
}

static void flush(lunar_http_req_t *r);

static void on_proceed(h2o_generator_t *self, h2o_req_t *req)
{
    (void)req;
    lunar_http_req_t *r = (lunar_http_req_t *)self;
    free(r->inflight);
    r->inflight = NULL;
    r->sending = 0;
    flush(r);
}

static void on_stop(h2o_generator_t *self, h2o_req_t *req)
{
    (void)req;
    lunar_http_req_t *r = (lunar_http_req_t *)self;
    r->client_gone = 1;
}

static void flush(lunar_http_req_t *r)
{
    if (r->sending || r->done || r->client_gone) return;
    if (r->pending_len == 0 && !r->end_requested) return;
    h2o_iovec_t v = h2o_iovec_init(r->pending ? r->pending : "", r->pending_len);
    r->inflight = r->pending;
    r->pending = NULL;
    r->pending_len = r->pending_cap = 0;
    int final = r->end_requested;
    r->sending = 1;
    if (final) r->done = 1;
    /* with a final send h2o may finish and dispose of the request before returning */
    h2o_send(r->req, &v, 1, final ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

int lunar_http_stream_start(lunar_http_req_t *r, int status, const char *content_type, const char *headers)
{
    if (r->closed || r->responded) return lunar_error(LUNAR_ESTATE, "request %llu already answered", (unsigned long long)r->id);
    r->responded = 1;
    if (h2o_linklist_is_linked(&r->link)) h2o_linklist_unlink(&r->link);
    r->gen.proceed = on_proceed;
    r->gen.stop = on_stop;
    set_headers(r, status, content_type, headers);
    h2o_start_response(r->req, &r->gen);
    return 0;
}

int lunar_http_stream_write(lunar_http_req_t *r, const char *data, size_t len)
{
    if (r->closed || r->client_gone) return lunar_error(LUNAR_ESTATE, "the client of request %llu is gone", (unsigned long long)r->id);
    if (!r->responded || r->end_requested) return lunar_error(LUNAR_ESTATE, "request %llu is not streaming", (unsigned long long)r->id);
    if (r->pending_len + len > r->pending_cap) {
        size_t cap = r->pending_cap ? r->pending_cap : 4096;
        while (cap < r->pending_len + len) cap *= 2;
        char *p = realloc(r->pending, cap);
        if (!p) return lunar_error(LUNAR_ENOMEM, "out of memory queueing %zu bytes", len);
        r->pending = p;
        r->pending_cap = cap;
    }
    memcpy(r->pending + r->pending_len, data, len);
    r->pending_len += len;
    flush(r);
    return 0;
}

int lunar_http_stream_end(lunar_http_req_t *r)
{
    if (r->closed || r->client_gone) return lunar_error(LUNAR_ESTATE, "the client of request %llu is gone", (unsigned long long)r->id);
    if (!r->responded || r->end_requested) return lunar_error(LUNAR_ESTATE, "request %llu is not streaming", (unsigned long long)r->id);
    r->end_requested = 1;
    flush(r);
    return 0;
}

/* ---- wake-ups and signals ------------------------------------------------------------------ */
static void on_wake_msgs(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    lunar_http_server_t *s = H2O_STRUCT_FROM_MEMBER(lunar_http_server_t, wake_receiver, receiver);
    while (!h2o_linklist_is_empty(messages)) h2o_linklist_unlink(messages->next);
    __atomic_store_n(&s->wake_pending, 0, __ATOMIC_RELEASE);
    if (s->cfg.on_wake) s->cfg.on_wake(s->cfg.ud);
}

void lunar_http_wake(void *server)
{
    lunar_http_server_t *s = server;
    if (__atomic_exchange_n(&s->wake_pending, 1, __ATOMIC_ACQ_REL)) return; /* already queued */
    h2o_multithread_send_message(&s->wake_receiver, &s->wake_msg);
}

static void begin_shutdown(lunar_http_server_t *s)
{
    if (s->stopping) return;
    s->stopping = 1;
    if (s->listener) {
        h2o_socket_read_stop(s->listener);
        h2o_socket_close(s->listener);
        s->listener = NULL;
    }
    clock_gettime(CLOCK_MONOTONIC, &s->deadline);
    s->deadline.tv_sec += (time_t)s->cfg.shutdown_timeout_s;
    /* HTTP/2 connections get a GOAWAY and close once their streams end; HTTP/1 ones stop
     * keeping alive after their current response */
    h2o_context_request_shutdown(&s->ctx);
    lunar_log(LUNAR_LOG_INFO, "http", "shutting down: no new connections; waiting for %d request(s)", s->inflight);
    if (s->cfg.on_shutdown) s->cfg.on_shutdown(s->cfg.ud);
}

static void on_signal_pipe(h2o_socket_t *sock, const char *err)
{
    lunar_http_server_t *s = sock->data;
    if (err) return;
    h2o_buffer_consume(&sock->input, sock->input->size);
    begin_shutdown(s);
}

static void on_signal(int sig)
{
    (void)sig;
    lunar_http_server_t *s = signal_target;
    if (s) {
        int saved = errno;
        ssize_t w = write(s->sigpipe[1], "s", 1);
        (void)w;
        errno = saved;
    }
}

void lunar_http_shutdown(lunar_http_server_t *s)
{
    ssize_t w = write(s->sigpipe[1], "s", 1);
    (void)w;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */
static void on_conn_close(void *data)
{
    lunar_http_server_t *s = data;
    s->open_conns--;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    lunar_http_server_t *s = listener->data;
    if (err) return;
    h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
    if (!sock) return;
    /* counted so that shutdown knows when the context can be disposed of (h2o's own server
     * counts its connections the same way) */
    s->open_conns++;
    sock->on_close.cb = on_conn_close;
    sock->on_close.data = s;
    h2o_accept(&s->accept_ctx, sock);
}

static int setup_tls(lunar_http_server_t *s)
{
    const lunar_http_config_t *c = &s->cfg;
    SSL_load_error_strings();
    SSL_library_init();
    OpenSSL_add_all_algorithms();
    s->accept_ctx.ssl_ctx = SSL_CTX_new(SSLv23_server_method());
    if (!s->accept_ctx.ssl_ctx) return lunar_error(LUNAR_EIO, "TLS: cannot create an SSL context");
    SSL_CTX_set_options(s->accept_ctx.ssl_ctx, SSL_OP_NO_SSLv2 | SSL_OP_NO_SSLv3);
    if (SSL_CTX_use_certificate_chain_file(s->accept_ctx.ssl_ctx, c->ssl_certfile) != 1)
        return lunar_error(LUNAR_EINVAL, "--ssl-certfile %s: cannot load a PEM certificate from it", c->ssl_certfile);
    if (SSL_CTX_use_PrivateKey_file(s->accept_ctx.ssl_ctx, c->ssl_keyfile, SSL_FILETYPE_PEM) != 1)
        return lunar_error(LUNAR_EINVAL, "--ssl-keyfile %s: cannot load a PEM private key from it", c->ssl_keyfile);
    if (SSL_CTX_check_private_key(s->accept_ctx.ssl_ctx) != 1)
        return lunar_error(LUNAR_EINVAL, "--ssl-keyfile %s does not match --ssl-certfile %s", c->ssl_keyfile, c->ssl_certfile);
#if H2O_USE_ALPN
    h2o_ssl_register_alpn_protocols(s->accept_ctx.ssl_ctx, h2o_http2_alpn_protocols);
#endif
    return 0;
}

static int listen_on(lunar_http_server_t *s)
{
    const lunar_http_config_t *c = &s->cfg;
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", c->port);
    int gai = getaddrinfo(c->host, port, &hints, &res);
    if (gai != 0) return lunar_error(LUNAR_EINVAL, "--host %s: %s", c->host, gai_strerror(gai));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        freeaddrinfo(res);
        return lunar_error(LUNAR_EIO, "cannot listen on %s:%d: %s", c->host, c->port, strerror(e));
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (void *)&ss, &sl) == 0)
        s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                  : ((struct sockaddr_in *)&ss)->sin_port);
    freeaddrinfo(res);
    s->listener = h2o_evloop_socket_create(s->ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    s->listener->data = s;
    h2o_socket_read_start(s->listener, on_accept);
    return 0;
}

/* ---- h2o's own errors in OpenAI's shape ------------------------------------------------------
 * h2o answers some requests before any handler sees them (a body past max_request_body: 413, a
 * broken chunked body: 400) with a text/plain line, on the host's fallback path. A filter there
 * rewrites that line into {"error": {"message", "type", "param", "code"}} as every other error of
 * the server reads; our handler's responses never pass through the fallback path. */
static void errjson_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt, h2o_send_state_t state)
{
    if (req->res.status < 400 || bufcnt == 0 || h2o_send_state_is_in_progress(state)) {
        h2o_ostream_send_next(self, req, bufs, bufcnt, state);
        return;
    }
    char text[256];
    size_t n = 0;
    for (size_t i = 0; i < bufcnt; i++)
        for (size_t j = 0; j < bufs[i].len && n < sizeof text - 1; j++) {
            char c = bufs[i].base[j];
            if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') text[n++] = c; /* h2o's texts are plain ASCII */
        }
    text[n] = 0;
    if (req->res.status == 413)
        snprintf(text, sizeof text, "the request body is larger than --max-request-body (%zu bytes)",
                 req->conn->ctx->globalconf->max_request_entity_size);
    n = strlen(text);
    h2o_iovec_t body;
    body.base = h2o_mem_alloc_pool(&req->pool, n + 160);
    body.len = (size_t)snprintf(body.base, n + 160,
                                "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"param\":null,\"code\":%d}}", text,
                                req->res.status == 413 ? "RequestEntityTooLarge" : "BadRequestError", req->res.status);
    req->res.content_length = body.len;
    ssize_t ct = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (ct >= 0) req->res.headers.entries[ct].value = h2o_iovec_init(H2O_STRLIT("application/json"));
    h2o_ostream_send_next(self, req, &body, 1, state);
}

static void errjson_setup(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    (void)self;
    if (req->res.status >= 400) {
        h2o_ostream_t *o = h2o_add_ostream(req, sizeof *o, slot);
        o->do_send = errjson_send;
        slot = &o->next;
    }
    h2o_setup_next_ostream(req, slot);
}

int lunar_http_create(const lunar_http_config_t *c, lunar_http_server_t **out)
{
    if (!c || !c->on_request || !out) return lunar_error(LUNAR_EINVAL, "lunar_http_create: on_request is required");
    if (!!c->ssl_certfile != !!c->ssl_keyfile)
        return lunar_error(LUNAR_EINVAL, "TLS needs both --ssl-certfile and --ssl-keyfile");
    if (c->port < 0 || c->port > 65535) return lunar_error(LUNAR_EINVAL, "--port %d is not a TCP port", c->port);
    lunar_http_server_t *s = calloc(1, sizeof *s);
    if (!s) return lunar_error(LUNAR_ENOMEM, "out of memory");
    s->cfg = *c;
    s->sigpipe[0] = s->sigpipe[1] = -1;
    signal(SIGPIPE, SIG_IGN);

    h2o_config_init(&s->config);
    s->config.max_request_entity_size = c->max_request_body;
    h2o_hostconf_t *host = h2o_config_register_host(&s->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    handler_t *h = (handler_t *)h2o_create_handler(path, sizeof *h);
    h->super.on_req = on_req;
    h->server = s;
    h2o_create_filter(&host->fallback_path, sizeof(h2o_filter_t))->on_setup_ostream = errjson_setup;
    h2o_context_init(&s->ctx, h2o_evloop_create(), &s->config);
    s->ctx_ready = 1;
    s->accept_ctx.ctx = &s->ctx;
    s->accept_ctx.hosts = s->config.hosts;
    h2o_multithread_register_receiver(s->ctx.queue, &s->wake_receiver, on_wake_msgs);
    h2o_linklist_init_anchor(&s->waiting);
    h2o_timeout_init(s->ctx.loop, &s->watch_timeout, WATCH_MS);
    s->watch_entry.cb = on_watch;
    s->watch_ready = 1;

    int rc = 0;
    if (c->ssl_certfile && (rc = setup_tls(s)) != 0) goto fail;
    if ((rc = listen_on(s)) != 0) goto fail;
    if (pipe2(s->sigpipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        rc = lunar_error(LUNAR_EIO, "pipe: %s", strerror(errno));
        goto fail;
    }
    s->sigsock = h2o_evloop_socket_create(s->ctx.loop, s->sigpipe[0], 0);
    s->sigsock->data = s;
    h2o_socket_read_start(s->sigsock, on_signal_pipe);
    *out = s;
    return 0;
fail:
    lunar_http_free(s);
    return rc;
}

int lunar_http_run(lunar_http_server_t *s)
{
    signal_target = s;
    s->ran = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct timespec idle_since = {0, 0}; /* when the last request ended, while stopping */
    for (;;) {
        if (s->stopping) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (s->inflight == 0) {
                /* requests are done; give clients a moment to close their connections (idle
                 * HTTP/1 keep-alive ones may not), so the context can be freed cleanly */
                if (s->open_conns <= 0) break;
                if (idle_since.tv_sec == 0) idle_since = now;
                double idle = (double)(now.tv_sec - idle_since.tv_sec) + (now.tv_nsec - idle_since.tv_nsec) * 1e-9;
                if (idle >= 1.0) break;
            } else if (now.tv_sec > s->deadline.tv_sec ||
                       (now.tv_sec == s->deadline.tv_sec && now.tv_nsec >= s->deadline.tv_nsec)) {
                lunar_log(LUNAR_LOG_WARN, "http", "shutdown timeout: %d request(s) still in flight", s->inflight);
                break;
            }
        }
        /* while stopping, wake periodically to see whether the last request has ended */
        h2o_evloop_run(s->ctx.loop, s->stopping ? 50 : INT32_MAX);
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal_target = NULL;
    return 0;
}

void lunar_http_free(lunar_http_server_t *s)
{
    if (!s) return;
    if (s->listener) h2o_socket_close(s->listener);
    if (s->sigsock) h2o_socket_close(s->sigsock);
    else if (s->sigpipe[0] >= 0) close(s->sigpipe[0]);
    if (s->sigpipe[1] >= 0) close(s->sigpipe[1]);
    if (s->ctx_ready && s->ran && s->open_conns > 0) {
        /* h2o 2.2 cannot dispose of a context while connections still hold timeouts (it
         * asserts), and it cannot close them for us; the process is about to exit, so the
         * context is left to the OS. */
        lunar_log(LUNAR_LOG_DEBUG, "http", "%d connection(s) still open at exit", s->open_conns);
    } else if (s->ctx_ready) {
        h2o_evloop_t *loop = s->ctx.loop;
        h2o_evloop_run(loop, 0); /* frees the sockets closed above */
        if (s->watch_ready) {
            if (h2o_timeout_is_linked(&s->watch_entry)) h2o_timeout_unlink(&s->watch_entry);
            h2o_timeout_dispose(loop, &s->watch_timeout);
        }
        /* request_shutdown armed HTTP/2's graceful-shutdown timer; with no connection left it
         * has nothing to do, and a linked entry makes h2o_context_dispose assert */
        if (h2o_timeout_is_linked(&s->ctx.http2._graceful_shutdown_timeout))
            h2o_timeout_unlink(&s->ctx.http2._graceful_shutdown_timeout);
        h2o_multithread_queue_t *queue = s->ctx.queue;
        h2o_multithread_unregister_receiver(queue, &s->wake_receiver);
        h2o_context_dispose(&s->ctx); /* destroys its queue, but with the evloop backend */
        h2o_config_dispose(&s->config);
        free(queue);              /* h2o 2.2 frees the queue's memory only under libuv */
        h2o_evloop_run(loop, 0); /* frees the queue's closed socket */
        h2o_evloop_destroy(loop);
    } else {
        h2o_config_dispose(&s->config);
    }
    if (s->accept_ctx.ssl_ctx) SSL_CTX_free(s->accept_ctx.ssl_ctx);
    free(s);
}

int lunar_http_port(const lunar_http_server_t *s) { return s->port; }
int lunar_http_inflight(const lunar_http_server_t *s) { return s->inflight; }
