/* lifecycle.c -- a thread that exits while attached, and fork()
 * (docs/DESIGN.md 11).
 *
 * Thread exit: the first stm_thread_attach of each thread sets a
 * pthread key whose destructor runs when the thread exits (returns from
 * its start function or calls pthread_exit) still attached.  It rolls
 * back a running transaction, inevitable or not (reason THREAD_EXIT: its
 * writes are never visible), and detaches the thread, so its descriptor
 * is reused and nobody waits for it.  Its committed objects stay valid.
 *
 * fork(): handlers registered at the first attach take, in the parent,
 * the inevitable mutex, the threads mutex, every thread's collection lock
 * and the chunk-table lock, in that order.  Holding them, no inevitable
 * transaction runs, no commit is publishing and no thread is collecting
 * or being stolen from, so the child inherits a heap whose committed
 * state is complete.  In the child only the forking thread exists: it
 * keeps its attachment; every other attached descriptor is retired (still
 * marked in use, never reused), its committed objects remain readable
 * through stealing as usual, and its running transaction, if any, is
 * simply never committed.  fork() inside a transaction is a fatal error:
 * the child could not know which state to keep. */
#include <setjmp.h>

#include "stm/core.h"
#include "gc/pages.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static int once_status = STM_ENOMEM;

static void on_thread_exit(void *unused)
{
    (void)unused;
    stm_thread *t = stm_me;
    if (!t)
        return;   /* detached already */
    if (t->state != TX_NONE) {
        if (t->state == TX_INEVITABLE) {
            /* Nothing is published before the commit, so an inevitable
             * transaction can be rolled back like any other: give the
             * clock and the inevitable mutex back first (as its commit
             * would), then abort it as a regular one. */
            stm_store_release(&stm_g.time, t->inevitable_time);
            pthread_mutex_unlock(&stm_g.inevitable_mutex);
            stm_store_relaxed(&t->state, TX_REGULAR);
        }
        /* stm_abort_tx ends with a longjmp to the transaction's stm_run,
         * whose frame is gone: give it one in this frame instead. */
        jmp_buf jb;
        t->jb = &jb;
        if (setjmp(jb) == 0)
            stm_abort_tx(t, STM_ABORT_THREAD_EXIT, NULL);
        t->jb = NULL;
    }
    /* Also drops the roots pushed outside transactions, like any detach. */
    stm_thread_detach();
}

static void fork_prepare(void)
{
    stm_thread *me = stm_me;
    if (me && me->state != TX_NONE)
        stm_fatal("fork() called inside a transaction: call it outside transactions "
                  "(docs/DESIGN.md 11)");
    pthread_mutex_lock(&stm_g.inevitable_mutex);
    pthread_mutex_lock(&stm_g.threads_mutex);
    for (unsigned i = 1; i <= stm_g.threads_allocated; i++)
        stm_lock(stm_g.threads[i]);
    gc_fork_lock();
}

static void fork_parent(void)
{
    gc_fork_unlock();
    for (unsigned i = stm_g.threads_allocated; i >= 1; i--)
        stm_unlock(stm_g.threads[i]);
    pthread_mutex_unlock(&stm_g.threads_mutex);
    pthread_mutex_unlock(&stm_g.inevitable_mutex);
}

static void fork_child(void)
{
    gc_fork_unlock();
    /* No collection can be past its rendezvous (it would hold the threads
     * mutex), but one may be waiting for threads that do not exist here. */
    gc_fork_child(stm_me);
    /* The descriptor of a thread that does not exist here stays marked in
     * use (retired): attach never hands it out, and stealing from it works
     * as from a thread that is merely slow.  Its locks were free when we
     * took them, so no half-done work of it is visible. */
    for (unsigned i = stm_g.threads_allocated; i >= 1; i--)
        stm_unlock(stm_g.threads[i]);
    pthread_mutex_unlock(&stm_g.threads_mutex);
    pthread_mutex_unlock(&stm_g.inevitable_mutex);
}

static void init_once(void)
{
    if (pthread_key_create(&exit_key, on_thread_exit) != 0)
        return;
    if (pthread_atfork(fork_prepare, fork_parent, fork_child) != 0)
        return;
    once_status = STM_OK;
}

int stm_lifecycle_attach(void)
{
    pthread_once(&once, init_once);
    if (once_status != STM_OK)
        return STM_ENOMEM;
    /* Any non-NULL value: the destructor runs only for those. */
    return pthread_setspecific(exit_key, &exit_key) == 0 ? STM_OK : STM_ENOMEM;
}
