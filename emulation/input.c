/* Opening an input file (scenario, trace, recorded probabilities): a regular
 * file of bounded size, checked before anything can block or grow. A FIFO
 * blocked the process on open; /dev/zero grew a buffer until memory ran out. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "emulation/internal.h"

FILE *wd_open_input(const char *path, long long max_bytes, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* a FIFO: no wait for a writer */
    if (fd < 0) {
        wd_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    FILE *f = NULL;
    if (fstat(fd, &st) != 0)
        wd_fail(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        wd_fail(err, errlen, "%s: not a regular file (%s)", path,
                S_ISDIR(st.st_mode)    ? "a folder"
                : S_ISFIFO(st.st_mode) ? "a FIFO or pipe"
                : S_ISCHR(st.st_mode)  ? "a character device"
                                       : "a special file");
    else if (max_bytes > 0 && (long long)st.st_size > max_bytes)
        wd_fail(err, errlen, "%s: %lld bytes is over the %lld MB limit for this input", path,
                (long long)st.st_size, max_bytes >> 20);
    else if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0 || !(f = fdopen(fd, "rb")))
        wd_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    if (!f) close(fd);
    return f;
}
