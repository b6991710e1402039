/* um_state.c - the set of uffds of one process and their fd numbers. */
#include <string.h>

#include "um_model.h"

int um_state_init(struct um_state *st, pid_t pid)
{
	memset(st, 0, sizeof(*st));
	st->pid = pid;
	st->next_id = 1;
	return 0;
}

static void uffd_free(struct um_uffd *u)
{
	um_free(u->ranges, (size_t)u->cap_ranges * sizeof(*u->ranges));
	um_wp_free(&u->wp);
	um_free(u->pending, UM_MAX_PENDING * sizeof(*u->pending));
	um_free(u, sizeof(*u));
}

void um_state_free(struct um_state *st)
{
	for (uint32_t i = 0; i < st->nuffds; i++)
		uffd_free(st->uffds[i]);
	um_free(st->uffds, (size_t)st->cap_uffds * sizeof(*st->uffds));
	memset(st, 0, sizeof(*st));
}

static int state_append(struct um_state *st, struct um_uffd *u)
{
	if (st->nuffds == st->cap_uffds) {
		uint32_t ncap = st->cap_uffds ? st->cap_uffds * 2 : 64;
		void *p = um_grow(st->uffds, (size_t)st->cap_uffds * sizeof(*st->uffds),
				  (size_t)ncap * sizeof(*st->uffds));
		if (!p)
			return -1;
		st->uffds = p;
		st->cap_uffds = ncap;
	}
	st->uffds[st->nuffds++] = u;
	return 0;
}

struct um_uffd *um_uffd_new(struct um_state *st, uint64_t ino, uint32_t origin,
			    uint32_t create_flags, pid_t mm_pid)
{
	struct um_uffd *u = um_zalloc(sizeof(*u));
	if (!u)
		return NULL;
	u->pending = um_zalloc(UM_MAX_PENDING * sizeof(*u->pending));
	if (!u->pending || state_append(st, u) < 0) {
		uffd_free(u);
		return NULL;
	}
	u->id = st->next_id++;
	u->ino = ino;
	u->origin = origin;
	u->create_flags = create_flags;
	u->mm_pid = mm_pid;
	return u;
}

void um_uffd_remove(struct um_state *st, struct um_uffd *u)
{
	for (uint32_t i = 0; i < st->nuffds; i++) {
		if (st->uffds[i] != u)
			continue;
		memmove(&st->uffds[i], &st->uffds[i + 1],
			(st->nuffds - i - 1) * sizeof(*st->uffds));
		st->nuffds--;
		uffd_free(u);
		return;
	}
}

struct um_uffd *um_uffd_by_fd(const struct um_state *st, int fd)
{
	for (uint32_t i = 0; i < st->nuffds; i++)
		for (int j = 0; j < st->uffds[i]->nfds; j++)
			if (st->uffds[i]->fds[j] == fd)
				return st->uffds[i];
	return NULL;
}

struct um_uffd *um_uffd_by_ino(const struct um_state *st, uint64_t ino)
{
	for (uint32_t i = 0; i < st->nuffds; i++)
		if (st->uffds[i]->ino == ino)
			return st->uffds[i];
	return NULL;
}

struct um_uffd *um_uffd_by_id(const struct um_state *st, uint32_t id)
{
	for (uint32_t i = 0; i < st->nuffds; i++)
		if (st->uffds[i]->id == id)
			return st->uffds[i];
	return NULL;
}

struct um_uffd *um_uffd_clone(struct um_state *st, const struct um_uffd *src)
{
	struct um_uffd *u = um_uffd_new(st, src->ino, src->origin, src->create_flags,
					src->mm_pid);
	if (!u)
		return NULL;
	uint32_t id = u->id;
	struct um_fault *pending = u->pending;
	*u = *src;
	u->id = id;
	u->pending = pending;
	memcpy(u->pending, src->pending, UM_MAX_PENDING * sizeof(*u->pending));
	u->ranges = NULL;
	u->cap_ranges = 0;
	if (src->nranges) {
		u->ranges = um_zalloc((size_t)src->nranges * sizeof(*u->ranges));
		if (!u->ranges) {
			u->nranges = 0;
			memset(&u->wp, 0, sizeof(u->wp));
			um_uffd_remove(st, u);
			return NULL;
		}
		memcpy(u->ranges, src->ranges, (size_t)src->nranges * sizeof(*u->ranges));
		u->cap_ranges = src->nranges;
	}
	if (um_wp_copy(&u->wp, &src->wp) < 0) {
		um_uffd_remove(st, u);
		return NULL;
	}
	return u;
}

int um_state_copy(struct um_state *dst, const struct um_state *src)
{
	um_state_init(dst, src->pid);
	for (uint32_t i = 0; i < src->nuffds; i++) {
		struct um_uffd *u = um_uffd_clone(dst, src->uffds[i]);
		if (!u) {
			um_state_free(dst);
			return -1;
		}
		u->id = src->uffds[i]->id;
	}
	dst->next_id = src->next_id;
	dst->missed_updates = src->missed_updates;
	return 0;
}

int um_fd_add(struct um_uffd *u, int fd, bool cloexec)
{
	for (int j = 0; j < u->nfds; j++)
		if (u->fds[j] == fd) {
			u->fd_flags[j] = cloexec;
			return 0;
		}
	if (u->nfds >= UM_MAX_FDS)
		return -1;
	u->fds[u->nfds] = fd;
	u->fd_flags[u->nfds] = cloexec;
	u->nfds++;
	return 0;
}

struct um_uffd *um_fd_close(struct um_state *st, int fd)
{
	struct um_uffd *u = um_uffd_by_fd(st, fd);
	if (!u)
		return NULL;
	for (int j = 0; j < u->nfds; j++) {
		if (u->fds[j] != fd)
			continue;
		memmove(&u->fds[j], &u->fds[j + 1], (size_t)(u->nfds - j - 1) * sizeof(int));
		memmove(&u->fd_flags[j], &u->fd_flags[j + 1],
			(size_t)(u->nfds - j - 1) * sizeof(uint32_t));
		u->nfds--;
		break;
	}
	return u->nfds == 0 ? u : NULL;
}

void um_fd_set_cloexec(struct um_uffd *u, int fd, bool cloexec)
{
	for (int j = 0; j < u->nfds; j++)
		if (u->fds[j] == fd)
			u->fd_flags[j] = cloexec;
}

void um_exec(struct um_state *st)
{
	for (uint32_t i = 0; i < st->nuffds;) {
		struct um_uffd *u = st->uffds[i];
		for (int j = 0; j < u->nfds;) {
			if (u->fd_flags[j]) {
				u->fds[j] = u->fds[u->nfds - 1];
				u->fd_flags[j] = u->fd_flags[u->nfds - 1];
				u->nfds--;
			} else {
				j++;
			}
		}
		if (u->nfds == 0) {
			um_uffd_remove(st, u);
			continue;
		}
		/* The fd survives.  If it served this process's own memory,
		 * that memory was the old image, which exec replaced: its
		 * registrations, protections and waiting faults are gone. */
		if (u->mm_pid == st->pid) {
			u->nranges = 0;
			um_wp_free(&u->wp);
			u->npending = 0;
			/* It still serves the old image's mm, which is gone (the
			 * kernel refuses any further REGISTER: ENOMEM), not the
			 * new image's memory. */
			u->mm_pid = 0;
		}
		u->origin = UM_ORIGIN_EXEC;
		i++;
	}
}
