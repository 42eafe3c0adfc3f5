package main

import "os"

// maxRSS is not measured here (0).
func maxRSS(ps *os.ProcessState) int64 { return 0 }

// umask is not used here: permission bits mean little on Windows.
func umask() os.FileMode { return 0o777 }
