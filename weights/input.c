/* Opening an input file (config, tokenizer, weights): a regular file of
 * bounded size, checked before anything can block or grow. A FIFO blocked
 * the process on open; a device reads without end. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "weights/weights.h"

int wd_input_open(const char *path, long long max_bytes, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* a FIFO: no wait for a writer */
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    int ok = 0;
    if (fstat(fd, &st) != 0)
        snprintf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        snprintf(err, errlen, "%s: not a regular file (%s)", path,
                 S_ISDIR(st.st_mode)    ? "a folder"
                 : S_ISFIFO(st.st_mode) ? "a FIFO or pipe"
                 : S_ISCHR(st.st_mode)  ? "a character device"
                                        : "a special file");
    else if (max_bytes > 0 && (long long)st.st_size > max_bytes)
        snprintf(err, errlen, "%s: %lld bytes is over the %lld MB limit for this input", path,
                 (long long)st.st_size, max_bytes >> 20);
    else if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0)
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    else
        ok = 1;
    if (!ok) close(fd), fd = -1;
    return fd;
}
