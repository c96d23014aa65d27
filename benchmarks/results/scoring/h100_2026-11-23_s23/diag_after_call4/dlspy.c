#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
static void *(*real_dlsym)(void *, const char *);
void *dlsym(void *handle, const char *symbol) {
    if (!real_dlsym) real_dlsym = (void *(*)(void *, const char *))dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
    Dl_info info; void* ra = __builtin_return_address(0);
    if (dladdr(ra, &info) && info.dli_fname) fprintf(stderr, "dlsym(%s) from %s\n", symbol, info.dli_fname);
    return real_dlsym(handle, symbol);
}
void *(*real_dlopen)(const char*, int);
void *dlopen(const char *f, int flags) {
    if (!real_dlopen) real_dlopen = (void *(*)(const char *, int))dlvsym(RTLD_NEXT, "dlopen", "GLIBC_2.2.5");
    fprintf(stderr, "dlopen(%s)\n", f ? f : "NULL");
    return real_dlopen(f, flags);
}
