"""Files on disk that lipsync writes or keeps.

    atomic.py  write-then-replace: the one way a file or folder is put in place
    files.py   file hashes (remembered per path, size, mtime, inode and ctime) and the cache folders
"""
