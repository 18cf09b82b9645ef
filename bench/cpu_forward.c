/*
 * bench/cpu_forward.c — CPU tokens/s of the model forward (lunar_runner_forward) for prefill
 * and decode, on the shared models and a dummy Llama-shaped 100M model.
 *
 *   build/bench_cpu_forward [--threads N] [--dtype auto|float32|bfloat16|float16] [--quick]
 *                           [MODEL_DIR[:dummy] ...]
 *
 * Without model arguments it runs $LUNAR_SHARED/models/{stories260K,TinyStories-656K} and
 * bench/models/llama-100m with --load-format dummy. Cases, each one flat batch per step as the
 * engine builds it:
 *   prefill BxP   B sequences of P prompt tokens in one step (logits of the last token each)
 *   decode  BxC   B sequences with C tokens cached, one new token each per step
 * The decode roofline is the time to stream the weights once per step at the memory
 * bandwidth measured here (a multi-threaded read of 512 MiB); a decode step cannot be faster
 * on this machine. There is no peer figure on this machine (no PyTorch/transformers here).
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lunar.h"
#include "lunar/runner.h"

#define BS 16

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- memory bandwidth (the decode roofline) ------------------------------------------- */
typedef struct { const double *p; size_t n; double sum; } bw_job_t;

static void *bw_read(void *arg)
{
    bw_job_t *j = arg;
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= j->n; i += 4) s0 += j->p[i], s1 += j->p[i + 1], s2 += j->p[i + 2], s3 += j->p[i + 3];
    j->sum = s0 + s1 + s2 + s3;
    return NULL;
}

static double read_bandwidth(int nthreads)
{
    size_t n = (512u << 20) / sizeof(double);
    double *buf = malloc(n * sizeof(double));
    if (!buf) return 0;
    for (size_t i = 0; i < n; i++) buf[i] = (double)(i & 7);
    double best = 0;
    pthread_t th[64];
    bw_job_t jobs[64];
    if (nthreads > 64) nthreads = 64;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now();
        for (int i = 0; i < nthreads; i++) {
            jobs[i] = (bw_job_t){buf + n / nthreads * i, n / nthreads, 0};
            pthread_create(&th[i], NULL, bw_read, &jobs[i]);
        }
        for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
        double gbs = n * sizeof(double) / (now() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    free(buf);
    return best;
}

/* ---- batches ---------------------------------------------------------------------------- */
typedef struct {
    int32_t *tok, *pos, *qs, *lens, *bt, *li;
    int64_t *slot;
    int maxb;
} bufs_t;

/* Sequence s owns blocks [s*maxb, (s+1)*maxb). Runs tokens [from, to) of sequences
 * s0..s0+B-1 as one step (fixed pseudo-random ids). */
static int step(lunar_runner_t *r, bufs_t *u, int s0, int B, int from, int to, int vocab, float *logits)
{
    int T = 0;
    u->qs[0] = 0;
    for (int i = 0; i < B; i++) {
        int s = s0 + i;
        for (int p = from; p < to; p++, T++) {
            u->tok[T] = (int32_t)((p * 7919u + s * 104729u) % (unsigned)vocab);
            u->pos[T] = p;
            u->slot[T] = (int64_t)(s * u->maxb + p / BS) * BS + p % BS;
        }
        u->qs[i + 1] = T;
        u->lens[i] = to;
        for (int k = 0; k < u->maxb; k++) u->bt[i * u->maxb + k] = s * u->maxb + k;
        u->li[i] = T - 1;
    }
    lunar_batch_t b = {T, B, u->tok, u->pos, u->slot, u->qs, u->lens, u->bt, u->maxb, u->li, B};
    int rc = lunar_runner_forward(r, &b, logits);
    if (rc) fprintf(stderr, "forward: %s\n", lunar_errmsg());
    return rc;
}

static uint64_t weight_bytes(const lunar_model_t *m)
{
    uint64_t n = 0;
    for (int i = 0; i < lunar_model_tensor_count(m); i++) n += lunar_model_tensor(m, i)->nbytes;
    return n;
}

static void bench_model(const char *dir, int dummy, const char *dtype, int threads, int quick, double bw)
{
    lunar_load_options_t lo = {dtype, dummy ? "dummy" : "auto", 1, 0};
    lunar_model_t *m = NULL;
    if (lunar_model_load(dir, &lo, &m)) {
        fprintf(stderr, "%s: %s\n", dir, lunar_errmsg());
        return;
    }
    const lunar_model_config_t *c = lunar_model_config(m);
    const char *name = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
    uint64_t wb = weight_bytes(m);

    enum { MAXB = 32 };
    int P = c->max_position_embeddings < 512 ? c->max_position_embeddings / 2 : 256;
    int C = P / 2;
    int maxb = (P + 2 * 32 + BS - 1) / BS + 1;
    lunar_runner_options_t o;
    lunar_runner_options_default(&o);
    o.num_kv_blocks = MAXB * maxb;
    o.block_size = BS;
    o.max_num_batched_tokens = 8 * P > MAXB ? 8 * P : MAXB;
    o.max_num_seqs = MAXB;
    o.num_threads = threads;
    lunar_runner_t *r = NULL;
    if (lunar_runner_create(m, &o, &r)) {
        fprintf(stderr, "%s: %s\n", dir, lunar_errmsg());
        lunar_model_free(m);
        return;
    }
    int T = o.max_num_batched_tokens;
    bufs_t u = {malloc(T * 4), malloc(T * 4), malloc((MAXB + 1) * 4), malloc(MAXB * 4),
                malloc((size_t)MAXB * maxb * 4), malloc(MAXB * 4), malloc(T * 8), maxb};
    float *logits = malloc((size_t)MAXB * c->vocab_size * sizeof(float));

    const int pre_b[] = {1, 8}, dec_b[] = {1, 8, 32};
    for (int i = 0; i < 2; i++) {
        int B = pre_b[i], reps = quick ? 1 : 3;
        double best = 1e30;
        step(r, &u, 0, B, 0, P, c->vocab_size, logits); /* warm-up: pages the cache in */
        for (int k = 0; k < reps; k++) {
            double t0 = now();
            if (step(r, &u, 0, B, 0, P, c->vocab_size, logits)) goto done;
            double dt = now() - t0;
            if (dt < best) best = dt;
        }
        printf("%-18s %-6s prefill %2dx%-4d %10.1f tok/s %9.2f ms/step          -\n", name,
               lunar_dtype_name(lunar_model_dtype(m)), B, P, B * P / best, best * 1e3);
    }
    for (int i = 0; i < 3; i++) {
        int B = dec_b[i], steps = quick ? 8 : 32;
        for (int s = 0; s < B; s++) /* the cached context, one sequence per step */
            if (step(r, &u, s, 1, 0, C, c->vocab_size, logits)) goto done;
        double t0 = now();
        for (int k = 0; k < steps; k++)
            if (step(r, &u, 0, B, C + k, C + k + 1, c->vocab_size, logits)) goto done;
        double dt = (now() - t0) / steps;
        double roof = bw > 0 ? wb / (bw * 1e9) : 0;
        printf("%-18s %-6s decode  %2dx%-4d %10.1f tok/s %9.2f ms/step %8.2f ms/step\n", name,
               lunar_dtype_name(lunar_model_dtype(m)), B, C, B / dt, dt * 1e3, roof * 1e3);
    }
done:
    free(u.tok), free(u.pos), free(u.qs), free(u.lens), free(u.bt), free(u.li), free(u.slot), free(logits);
    lunar_runner_free(r);
    lunar_model_free(m);
}

int main(int argc, char **argv)
{
    int threads = 0, quick = 0, nmodels = 0;
    const char *dtype = "auto", *models[16];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) dtype = argv[++i];
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: %s [--threads N] [--dtype D] [--quick] [MODEL_DIR[:dummy] ...]\n", argv[0]);
            return 2;
        } else if (nmodels < 16) models[nmodels++] = argv[i];
    }
    static char defaults[3][1024];
    if (!nmodels) {
        const char *shared = getenv("LUNAR_SHARED") ? getenv("LUNAR_SHARED") : "../shared";
        const char *src = getenv("LUNAR_SRC") ? getenv("LUNAR_SRC") : ".";
        snprintf(defaults[0], sizeof defaults[0], "%s/models/stories260K", shared);
        snprintf(defaults[1], sizeof defaults[1], "%s/models/TinyStories-656K", shared);
        snprintf(defaults[2], sizeof defaults[2], "%s/bench/models/llama-100m:dummy", src);
        for (int i = 0; i < 3; i++) models[nmodels++] = defaults[i];
    }
    int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int nt = threads > 0 ? threads : ncpu;
    char cpu[128] = "unknown CPU", commit[64] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
                snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
                cpu[strcspn(cpu, "\n")] = 0;
                break;
            }
        fclose(f);
    }
    f = popen("git rev-parse --short HEAD 2>/dev/null", "r");
    if (f) {
        if (fgets(commit, sizeof commit, f)) commit[strcspn(commit, "\n")] = 0;
        pclose(f);
    }
    double bw = read_bandwidth(nt);
    printf("# bench_cpu_forward: lunar %s CPU forward, %s, %d cores, %d threads, read bandwidth %.1f GB/s, "
           "commit %s, dtype %s\n", lunar_version(), cpu, ncpu, nt, bw, commit, dtype);
    printf("# peer: none on this machine (no transformers); roofline = weight bytes / read bandwidth per step\n");
    printf("%-18s %-6s %-15s %16s %17s %16s\n", "model", "dtype", "case", "ours", "ours", "roofline");
    for (int i = 0; i < nmodels; i++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s", models[i]);
        char *colon = strrchr(dir, ':');
        int dummy = colon && !strcmp(colon, ":dummy");
        if (dummy) *colon = 0;
        bench_model(dir, dummy, dtype, threads, quick, bw);
    }
    return 0;
}
