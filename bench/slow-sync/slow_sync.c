/*
 * A disk whose every sync is slow, for benchmarks: LD_PRELOAD this library and fsync() and
 * fdatasync() each sleep SLOW_SYNC_MS milliseconds (default 30) before doing the real sync.
 * bench/run.sh builds it with gcc; nothing else uses it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void slow_down(void) {
    const char *text = getenv("SLOW_SYNC_MS");
    long ms = text ? atol(text) : 30;
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    slow_down();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    slow_down();
    return real(fd);
}
