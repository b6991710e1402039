#ifndef UFFDSHIM_SHIM_PATH_H
#define UFFDSHIM_SHIM_PATH_H
#include <stddef.h>
/* Absolute path of libuffdshim.so into buf; 0, or -1 with a message. */
int shim_library_path(char *buf, size_t len);
#endif
