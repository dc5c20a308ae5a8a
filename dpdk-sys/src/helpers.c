/* Small C helpers for things bindgen cannot express: rte_errno is a per-lcore
 * thread-local variable behind a macro. */
#include <rte_errno.h>

int fulcrum_rte_errno(void) { return rte_errno; }
