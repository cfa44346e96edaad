//! `file-lock`'s conformance suite: flock excludes the processes of one host, and a
//! SIGKILLed holder's lock is released by the kernel.

turnstile_harness::conformance_suite!(file_lock, "file-lock", procs = true, kill = true);
