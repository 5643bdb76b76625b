/* The group-commit ceiling of this machine, with no Python in the way.
 *
 * benchmarks/figures/group_commit.py builds and runs this beside walogs'
 * group_commit figure: the same scheme as walogs.Wal (one write per append under a
 * mutex; the first thread to find no sync running leads one fdatasync that
 * covers every frame written before it; the others wait, here on a pthread
 * condition variable), in C with pthreads, on the same filesystem. What 8
 * threads gain over 1 here is what the disk, the kernel and the machine's
 * thread wake-ups allow; walogs cannot beat it.
 *
 * usage: group_commit_ceiling DIR SECONDS ROUNDS [gather]
 * Each round runs 1 thread then 8 threads (order alternating) for SECONDS
 * each, on a fresh file in DIR, appending 116-byte frames (a 100-byte
 * entry's frame). Prints one JSON object: appends/s per round for 1 and 8
 * threads, and appends per fdatasync with 8 threads.
 *
 * With "gather", a leader first waits (up to 200 us) until one frame per
 * thread is written and not yet durable, so one fdatasync covers all of
 * them: more appends per sync, to see whether that raises the ceiling.
 *
 * The file is created in DIR and unlinked after the run, like a segment.
 *
 * Built as a shared library too (the figure loads it with ctypes): gc_reset and
 * gc_append let Python threads call this append with the GIL released for
 * the whole call, to see what Python threads reach when nothing of the
 * durable append needs the GIL.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FRAME_SIZE 116
#define MAX_THREADS 8
#define MAX_ROUNDS 64

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t synced = PTHREAD_COND_INITIALIZER;
static pthread_cond_t all_waiting = PTHREAD_COND_INITIALIZER;
static int fd, nthreads_now, gather;
static long next_lsn, durable_lsn, end_offset, sync_calls;
static int syncing;
static volatile int stop;
static long counts[MAX_THREADS];
static unsigned char frame[FRAME_SIZE];

static void die(const char *what) {
    fprintf(stderr, "group_commit_ceiling: %s: %s\n", what, strerror(errno));
    exit(2);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* A leader, mutex held, with "gather": wait (up to 200 us) until one frame
 * per thread is written and not yet durable. */
static void gather_frames(void) {
    if (!gather || nthreads_now < 2) return;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 200000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    while (next_lsn - 1 - durable_lsn < nthreads_now && !stop)
        if (pthread_cond_timedwait(&all_waiting, &mutex, &until) == ETIMEDOUT)
            break;
}

/* One durable append; 0, or -1 with errno set. */
static int append(void) {
    pthread_mutex_lock(&mutex);
    long lsn = next_lsn++;
    if (pwrite(fd, frame, FRAME_SIZE, end_offset) != FRAME_SIZE) {
        pthread_mutex_unlock(&mutex);
        return -1;
    }
    end_offset += FRAME_SIZE;
    while (durable_lsn < lsn) {
        if (syncing) {
            if (next_lsn - 1 - durable_lsn >= nthreads_now)
                pthread_cond_signal(&all_waiting);   /* every thread's frame is in */
            pthread_cond_wait(&synced, &mutex);
            continue;
        }
        syncing = 1;                       /* lead: cover everything written so far */
        gather_frames();
        long target = next_lsn - 1;
        pthread_mutex_unlock(&mutex);
        int failed = fdatasync(fd) != 0;
        pthread_mutex_lock(&mutex);
        if (failed) {
            syncing = 0;
            pthread_cond_broadcast(&synced);
            pthread_mutex_unlock(&mutex);
            return -1;
        }
        sync_calls++;
        syncing = 0;
        if (target > durable_lsn) durable_lsn = target;
        pthread_cond_broadcast(&synced);
    }
    pthread_mutex_unlock(&mutex);
    return 0;
}

static void reset(int descriptor, int nthreads) {
    fd = descriptor;
    next_lsn = 1;
    durable_lsn = end_offset = sync_calls = 0;
    syncing = stop = 0;
    nthreads_now = nthreads;
    memset(frame, 'x', sizeof frame);
}

/* The library interface (ctypes): one writer at a time per process. */
void gc_reset(int descriptor, int nthreads, int gather_frames) {
    pthread_mutex_lock(&mutex);
    reset(descriptor, nthreads);
    gather = gather_frames;
    pthread_mutex_unlock(&mutex);
}

int gc_append(void) { return append(); }

long gc_sync_calls(void) { return sync_calls; }

static void *worker(void *arg) {
    long i = (long)arg, n = 0;
    while (!stop) {
        if (append() != 0) die("append");
        n++;
    }
    counts[i] = n;
    return NULL;
}

/* Appends per second with nthreads; *per_sync gets appends per fdatasync. */
static double run(const char *dir, int nthreads, double seconds, double *per_sync) {
    char path[4096];
    pthread_t threads[MAX_THREADS];
    snprintf(path, sizeof path, "%s/ceiling-XXXXXX", dir);
    fd = mkstemp(path);
    if (fd < 0) die("mkstemp");
    reset(fd, nthreads);
    double t0 = now();
    for (long i = 0; i < nthreads; i++)
        if (pthread_create(&threads[i], NULL, worker, (void *)i)) die("pthread_create");
    usleep((useconds_t)(seconds * 1e6));
    stop = 1;
    long total = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(threads[i], NULL);
        total += counts[i];
    }
    double elapsed = now() - t0;
    close(fd);
    unlink(path);
    *per_sync = sync_calls ? (double)total / sync_calls : 0.0;
    return total / elapsed;
}

static void print_list(const char *name, const double *v, int n, const char *end) {
    printf("\"%s\": [", name);
    for (int i = 0; i < n; i++) printf("%s%.1f", i ? ", " : "", v[i]);
    printf("]%s", end);
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5 || (argc == 5 && strcmp(argv[4], "gather") != 0)) {
        fprintf(stderr, "usage: %s DIR SECONDS ROUNDS [gather]\n", argv[0]);
        return 2;
    }
    gather = argc == 5;
    double seconds = atof(argv[2]);
    int rounds = atoi(argv[3]);
    if (seconds <= 0 || rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "SECONDS must be > 0 and ROUNDS 1..%d\n", MAX_ROUNDS);
        return 2;
    }
    double one[MAX_ROUNDS], eight[MAX_ROUNDS], per_sync[MAX_ROUNDS], ignored;
    for (int r = 0; r < rounds; r++) {
        if (r % 2 == 0) {
            one[r] = run(argv[1], 1, seconds, &ignored);
            eight[r] = run(argv[1], MAX_THREADS, seconds, &per_sync[r]);
        } else {
            eight[r] = run(argv[1], MAX_THREADS, seconds, &per_sync[r]);
            one[r] = run(argv[1], 1, seconds, &ignored);
        }
    }
    printf("{");
    print_list("one_thread", one, rounds, ", ");
    print_list("eight_threads", eight, rounds, ", ");
    print_list("appends_per_sync", per_sync, rounds, "}\n");
    return 0;
}
