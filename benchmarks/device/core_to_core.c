/* Core-to-core round-trip latency: which logical CPUs share a physical core (SMT siblings) or a
 * socket, on a host whose guest topology (lscpu) does not say. Two threads, pinned to CPUs a and b,
 * bounce a counter through one cache line; siblings answer in tens of ns, cores of one socket in
 * roughly a hundred, cores of another socket in a couple of hundred.
 *
 *   cc -O2 -pthread core_to_core.c -o c2c && ./c2c [rounds] [a:b ... | all]   -> lines "a b ns_per_round_trip"
 * With no pairs given it measures CPU 0 and CPU 1 against every other CPU; with "all", every pair
 * a < b (64 CPUs: 2,016 pairs, about 4 s at 5,000 rounds), a map to group the CPUs by. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static _Alignas(64) atomic_long flag;
static long rounds = 20000;

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (cpu < 0 || cpu >= CPU_SETSIZE || pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) {
        /* a CPU this process may not use, or that does not exist: a figure for it would be a lie */
        fprintf(stderr, "core_to_core: cannot run on CPU %d\n", cpu);
        exit(2);
    }
}

/* Untimed rounds first: the clock must not count the pong thread's start and its move to its CPU
 * (on the x4 hosts that added about 1 us per round at 3,000 rounds: session 11). */
static long warmup(void) { return rounds / 10 + 100; }

static void *pong(void *arg) {
    pin((int)(long)arg);
    for (long i = 0; i < warmup() + rounds; i++) {
        while (atomic_load_explicit(&flag, memory_order_acquire) != 2 * i + 1) {}
        atomic_store_explicit(&flag, 2 * i + 2, memory_order_release);
    }
    return NULL;
}

static double measure(int a, int b) {
    pthread_t t;
    atomic_store(&flag, 0);
    pthread_create(&t, NULL, pong, (void *)(long)b);
    pin(a);
    struct timespec s, e;
    for (long i = 0; i < warmup() + rounds; i++) {
        if (i == warmup()) clock_gettime(CLOCK_MONOTONIC, &s);
        atomic_store_explicit(&flag, 2 * i + 1, memory_order_release);
        while (atomic_load_explicit(&flag, memory_order_acquire) != 2 * i + 2) {}
    }
    clock_gettime(CLOCK_MONOTONIC, &e);
    pthread_join(t, NULL);
    return ((e.tv_sec - s.tv_sec) * 1e9 + (e.tv_nsec - s.tv_nsec)) / rounds;
}

int main(int argc, char **argv) {
    if (argc > 1) rounds = atol(argv[1]);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (argc > 2 && argv[2][0] == 'a') {
        for (int a = 0; a < n; a++)
            for (int b = a + 1; b < n; b++) printf("%d %d %.1f\n", a, b, measure(a, b));
        return 0;
    }
    if (argc > 2) {
        for (int k = 2; k < argc; k++) {
            int a, b;
            if (sscanf(argv[k], "%d:%d", &a, &b) == 2) printf("%d %d %.1f\n", a, b, measure(a, b));
        }
        return 0;
    }
    int sources[2] = {0, 1};
    for (int k = 0; k < 2; k++)
        for (int b = 0; b < n; b++)
            if (b != sources[k]) printf("%d %d %.1f\n", sources[k], b, measure(sources[k], b));
    return 0;
}
