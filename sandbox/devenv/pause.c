/*
 * The pod sandbox ("pause") process of regsandbox's local data plane.
 *
 * Every pod's namespaces are held open by one process that does nothing. As PID 1 of the
 * pod's PID namespace it must also reap orphans, or they pile up as zombies; and it must
 * exit promptly when the kubelet stops the pod (SIGTERM or SIGINT).
 *
 * Built statically by sandbox/devenv/images.py into the image localhost/pause.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;

static void on_stop(int signo) {
  (void)signo;
  stop_requested = 1;
}

static void on_child(int signo) {
  (void)signo;
  int saved = errno;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = saved;
}

static int install(int signo, void (*handler)(int), int flags) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = handler;
  action.sa_flags = flags;
  sigemptyset(&action.sa_mask);
  return sigaction(signo, &action, NULL);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    puts("regsandbox-pause 1");
    return 0;
  }
  if (getpid() != 1) {
    fputs("pause: not running as PID 1; orphans of this namespace are not reaped here\n", stderr);
  }
  if (install(SIGTERM, on_stop, 0) != 0 || install(SIGINT, on_stop, 0) != 0 ||
      install(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART) != 0) {
    perror("pause: sigaction");
    return 1;
  }
  /* Block the stop signals outside sigsuspend, so one that arrives between the test of
   * stop_requested and the wait is delivered inside the wait instead of being missed. */
  sigset_t stops, waiting;
  sigemptyset(&stops);
  sigaddset(&stops, SIGTERM);
  sigaddset(&stops, SIGINT);
  sigprocmask(SIG_BLOCK, &stops, &waiting);
  sigdelset(&waiting, SIGTERM);
  sigdelset(&waiting, SIGINT);
  while (!stop_requested) {
    sigsuspend(&waiting);
  }
  return 0;
}
