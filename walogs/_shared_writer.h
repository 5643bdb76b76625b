/* The system calls and memory accesses of the compiled shared writer (_shared_writer.pyx).
 *
 * Words of the mapped WRITERS file are read and stored with __atomic builtins:
 * other processes change them while this one runs, so every access is one
 * untorn load or store the compiler may neither split, merge nor hoist out of
 * a loop. The layout (offsets, sizes) is walogs._format's, passed in by the
 * caller. OFD byte-range locks and futex(2) as walogs._lock and walogs._futex
 * call them from Python.
 */
#ifndef WALOGS_SHARED_WRITER_H
#define WALOGS_SHARED_WRITER_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#if defined(__linux__)
#include <linux/futex.h>
#endif

/* Linux's values, for C libraries whose headers predate them (as walogs._lock does). */
#ifndef F_OFD_GETLK
#define F_OFD_GETLK 36
#endif
#ifndef F_OFD_SETLK
#define F_OFD_SETLK 37
#endif
#ifndef F_OFD_SETLKW
#define F_OFD_SETLKW 38
#endif

/* Shared words. Acquire/release for the state (slots, durable LSN, poison);
 * sequentially consistent for the gather's two words, where an appender stores
 * UNSYNCED then loads WANT and the leader stores WANT then loads UNSYNCED:
 * at least one of them must see the other's store. */
static inline uint64_t wsw_load64(const unsigned char *base, size_t at)
{
    return __atomic_load_n((const uint64_t *)(base + at), __ATOMIC_ACQUIRE);
}

static inline void wsw_store64(unsigned char *base, size_t at, uint64_t value)
{
    __atomic_store_n((uint64_t *)(base + at), value, __ATOMIC_RELEASE);
}

static inline uint32_t wsw_load32(const unsigned char *base, size_t at)
{
    return __atomic_load_n((const uint32_t *)(base + at), __ATOMIC_ACQUIRE);
}

static inline void wsw_store32(unsigned char *base, size_t at, uint32_t value)
{
    __atomic_store_n((uint32_t *)(base + at), value, __ATOMIC_RELEASE);
}

static inline uint32_t wsw_load32_sc(const unsigned char *base, size_t at)
{
    return __atomic_load_n((const uint32_t *)(base + at), __ATOMIC_SEQ_CST);
}

static inline void wsw_store32_sc(unsigned char *base, size_t at, uint32_t value)
{
    __atomic_store_n((uint32_t *)(base + at), value, __ATOMIC_SEQ_CST);
}

/* Process-local flags and counters of the writer object (threads of one process). */
static inline int wsw_iload(const int *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static inline void wsw_istore(int *p, int value)
{
    __atomic_store_n(p, value, __ATOMIC_SEQ_CST);
}

static inline void wsw_iadd(int *p, int value)
{
    __atomic_add_fetch(p, value, __ATOMIC_SEQ_CST);
}

static inline int64_t wsw_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static inline int wsw_ofd(int fd, int command, short type, off_t at)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = at;
    fl.l_len = 1;
    return fcntl(fd, command, &fl);
}

/* The write lock on byte ``at``, sleeping in the kernel until it is free: 0 or an errno. */
static inline int wsw_lock(int fd, off_t at)
{
    while (wsw_ofd(fd, F_OFD_SETLKW, F_WRLCK, at) != 0) {
        if (errno != EINTR)
            return errno;
    }
    return 0;
}

/* 1: taken; 0: another open file holds it; < 0: minus an errno. */
static inline int wsw_try_lock(int fd, off_t at)
{
    while (wsw_ofd(fd, F_OFD_SETLK, F_WRLCK, at) != 0) {
        if (errno == EAGAIN || errno == EACCES || errno == EWOULDBLOCK)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
    return 1;
}

static inline int wsw_unlock(int fd, off_t at)
{
    while (wsw_ofd(fd, F_OFD_SETLK, F_UNLCK, at) != 0) {
        if (errno != EINTR)
            return errno;
    }
    return 0;
}

/* Sleep while the u32 at base + at equals ``expected``, at most ``ns``; woken by wsw_futex_wake.
 * Not FUTEX_PRIVATE_FLAG: processes meet on a page of a shared file mapping. */
static inline void wsw_futex_wait(unsigned char *base, size_t at, uint32_t expected, int64_t ns)
{
    struct timespec ts;
    if (ns <= 0)
        return;
    ts.tv_sec = (time_t)(ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
#if defined(__linux__) && defined(SYS_futex)
    syscall(SYS_futex, (uint32_t *)(base + at), FUTEX_WAIT, expected, &ts, NULL, 0);
#else
    (void)base; (void)at; (void)expected;
    nanosleep(&ts, NULL);
#endif
}

static inline void wsw_futex_wake(unsigned char *base, size_t at, int count)
{
#if defined(__linux__) && defined(SYS_futex)
    syscall(SYS_futex, (uint32_t *)(base + at), FUTEX_WAKE, count, NULL, NULL, 0);
#else
    (void)base; (void)at; (void)count;
#endif
}

static inline void wsw_pause_ns(int64_t ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    nanosleep(&ts, NULL);
}

#endif
