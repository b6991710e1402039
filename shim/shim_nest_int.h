/* shim_nest_int.h - state shared by the two halves of nesting:
 *   shim_nest.c       registrations, spans, routing of messages, events;
 *   shim_nest_wake.c  how a client's readers hear of routed messages
 *                     (inboxes, eventfd kicks, doorbells, parked readers);
 *   shim_nest_fork.c  FORK events of clients, and fork() waiting for them.
 * Everything here is under the model lock unless said otherwise. */
#ifndef SHIM_NEST_INT_H
#define SHIM_NEST_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#include "shim.h"
#include "shim_raw.h"
#include "uffd_compat.h"

#define MAX_SPANS 256
#define MAX_CLIENTS 16
#define INBOX 64
#define MAX_DELEGATED 4
enum { RING_NOW = 1, RING_LATER = 2 };
/* uffd_msg.reserved3 of an event the shim made: its caller waits until the
 * app reads it (cleared before the app sees the message). */
#define NEST_EV_HOLD 0x484f4c44u

/* Memory several clients registered: one kernel registration (the carrier's,
 * with the union of the modes) serves them all. */
struct span {
	uint64_t start, end;
	uint32_t carrier_id;
	uint64_t kmodes;        /* modes of the kernel registration (a superset) */
	int augmented;          /* WP added for dirty tracking, one client */
	int ghost;              /* 1 + slot in nest_ghosts: the carrier closed its
				 * uffd, the shim keeps the file for the others */
};

/* A carrier's uffd file the app closed while other clients still used its
 * kernel registration: kept open (hidden) so that registration never lapses,
 * read by the pump (shim_pump.c), closed when no span needs it. */
#define MAX_GHOSTS 16
struct ghost {
	int fd;                 /* hidden; -1: slot free */
	uint32_t id;            /* the model id the uffd had */
};
extern struct ghost nest_ghosts[MAX_GHOSTS] SHIM_HIDDEN;

/* A uffd that shares memory with others, or that gets messages the shim
 * read for it: an inbox, and ways to wake its readers. */
struct client {
	int used;               /* slot taken (until its bell thread ends) */
	int dead;               /* its uffd is gone: the bell thread ends */
	uint32_t id;            /* model uffd id */
	int fd;
	uint64_t bell;          /* doorbell page */
	int ring;               /* futex: RING_NOW / RING_LATER: the bell
				 * thread should ring (now / if still needed) */
	int busy;               /* the bell is being rung */
	struct uffd_msg inbox[INBOX];
	uint32_t head, tail;    /* messages head..tail-1 wait */
	/* Readers parked in our read() (shim_nest_park).  efd and epfd are the
	 * slot's for good (never closed while the process lives, so a kick
	 * written after unlocking never hits a reused fd number). */
	int efd;                /* eventfd: kicks parked readers */
	int parked;             /* readers parked (atomic) */
	int forced;             /* we set O_NONBLOCK on its file; the app's view
				 * stays blocking and our read() emulates it */
	int force_tried;
	int epfd;               /* parked readers wait here: efd, the carriers'
				 * fds it delegates, its own fd last */
	int ep_own;             /* own fd is in the set */
	int reorder;            /* re-add own fd behind a delegate's entry */
	int ndel;
	int del_fds[MAX_DELEGATED];
	int ev_hold;            /* events of ours queued, whose callers wait
				 * (futex; shim_nest_event_wait) */
};

extern struct span nest_spans[MAX_SPANS] SHIM_HIDDEN;
extern uint32_t nest_nspans SHIM_HIDDEN;
extern struct client nest_clients[MAX_CLIENTS] SHIM_HIDDEN;
extern uint32_t nest_nclients SHIM_HIDDEN;

static inline long nest_kcall(int fd, unsigned long req, void *arg)
{
	return RAW3(SYS_ioctl, fd, req, arg);
}

static inline void nest_kwake(int fd, uint64_t s, uint64_t e)
{
	struct uffdio_range r = {s, e - s};
	nest_kcall(fd, UFFDIO_WAKE, &r);
}

/* lookups and routing (shim_nest.c) */
struct client *nest_client_of(uint32_t id) SHIM_HIDDEN;
struct client *nest_client_by_fd(int fd) SHIM_HIDDEN;
struct span *nest_span_at(uint64_t addr) SHIM_HIDDEN;
uint32_t nest_route(const struct span *s, uint64_t page, uint64_t flags) SHIM_HIDDEN;
void nest_resolve_unwanted(int fd, uint64_t page, uint64_t flags) SHIM_HIDDEN;
/* Clients of span s other than uffd id (same process, open). */
uint32_t nest_others(const struct span *s, uint32_t id) SHIM_HIDDEN;

/* shim_nest_ghost.c */
int nest_ghost_fd(uint32_t id) SHIM_HIDDEN;       /* -1: not a ghost */
void nest_ghost_release(int slot) SHIM_HIDDEN;    /* close it if no span uses it */
void nest_ghosts_after_fork_child(void) SHIM_HIDDEN;

/* shim_nest_wake.c */
struct client *nest_client_get(struct um_uffd *u, int fd) SHIM_HIDDEN;
bool nest_inbox_push(struct client *c, const struct uffd_msg *m) SHIM_HIDDEN;
struct uffd_msg nest_inbox_pop(struct client *c) SHIM_HIDDEN;
void nest_inbox_unpop(struct client *c, const struct uffd_msg *m) SHIM_HIDDEN;
/* Wake a reader of c: returns an eventfd to kick once the caller unlocked
 * (nest_kick), or -1 when it did what was needed. */
int nest_ring_later(struct client *c) SHIM_HIDDEN;
void nest_kick(int efd) SHIM_HIDDEN;
void nest_ring(struct client *c) SHIM_HIDDEN;
/* The client whose reader is reading a carrier's fd for it (this thread):
 * messages routed to it need no ring. */
struct client *nest_quiet_client(void) SHIM_HIDDEN;
void nest_clients_after_fork_child(void) SHIM_HIDDEN;
/* No parked reader may wait on fd any more (the app closes it). */
void nest_forget_delegate(int fd) SHIM_HIDDEN;

/* shim_nest_fork.c: a FORK event read on client me's uffd (false: only
 * the doorbell made it, drop it), and one such event done (the child waits). */
bool nest_fork_fixup_locked(struct client *me, const struct uffd_msg *m) SHIM_HIDDEN;
void nest_fork_sync_one(void) SHIM_HIDDEN;

#endif
