"""How the work runs on this machine.

    devices.py      where the models run (with or without torch), CPU threads, batch sizes, the frame budget
    concurrency.py  read-ahead on a thread, build once per key
    timings.py      busy seconds per stage
    interrupts.py   Ctrl-C and SIGTERM as exceptions, for the commands and the batch
"""
