/* foreign.h - uffds held by OTHER processes that serve a pid's memory: the
 * reader of a FORK event holds the child's, a page-fault handler holds the
 * uffd it received with SCM_RIGHTS.  Verify needs them to account for
 * registrations it sees in the pid's smaps. */
#ifndef UFFDSHIM_FOREIGN_H
#define UFFDSHIM_FOREIGN_H

#include <sys/types.h>

#include "um_model.h"

/* Scan /proc for processes other than pid holding a userfaultfd, ask each
 * shimmed one for its model, and copy into extra (initialised here) every
 * uffd whose memory is pid's.  Returns the number of uffds found. */
int gather_foreign_uffds(pid_t pid, struct um_state *extra);

#endif
