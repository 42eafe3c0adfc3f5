// Package emu builds the CPU stand-ins for the CUDA driver, NVRTC and
// cuBLAS (the C++ sources beside this file, see README.md) so that tests
// run the CUDA backend, unchanged, on the CPU. Only tests import it; the
// minitron binary never links it.
//
// Build compiles the stand-ins once per content of their sources into a
// shared cache folder; Dir does the same for a test, skipping it when no
// C++ compiler is installed (failing instead when MINITRON_REQUIRE_EMU=1).
// Env and Setenv point the CUDA backend, in a subprocess or in the test
// process, at the stand-ins and at a kernel cache of their own.
package emu

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

//go:embed build.sh prelude/*.h src/*.h src/*.cc
var sources embed.FS

// ErrNoCompiler is returned by Build when no C++ compiler is installed.
var ErrNoCompiler = errors.New("emu: no C++ compiler (clang++) is installed; apt-get install clang-14")

// Hash identifies the sources: the stand-ins are rebuilt when it changes.
func Hash() string {
	h := sha256.New()
	for _, name := range files() {
		data, _ := sources.ReadFile(name)
		fmt.Fprintf(h, "%s %d\n", name, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func files() []string {
	var out []string
	fs.WalkDir(sources, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// root returns the folder the builds are cached in: $MINITRON_EMU_CACHE
// when set, else minitron/emu under the user cache directory.
func root() (string, error) {
	if d := os.Getenv("MINITRON_EMU_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("emu: no cache directory for the stand-ins (%v); set MINITRON_EMU_CACHE", err)
	}
	return filepath.Join(d, "minitron", "emu"), nil
}

var (
	buildMu   sync.Mutex
	buildDir  string
	buildErr  error
	buildTook time.Duration
)

// Build returns the folder holding the stand-ins (libcuda.so.1,
// libnvrtc.so, libcublas.so and their other names), building them first
// unless a build of the same sources is cached. Builds are atomic (a
// temporary folder renamed into place), so a killed build leaves nothing
// behind, and a lock file makes concurrent test processes wait for one
// build instead of each running their own.
func Build() (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" || buildErr != nil {
		return buildDir, buildErr
	}
	start := time.Now()
	buildDir, buildErr = build()
	buildTook = time.Since(start)
	return buildDir, buildErr
}

func build() (string, error) {
	if runtime.GOOS != "linux" {
		return "", fmt.Errorf("emu: the stand-ins run on Linux only (this is %s)", runtime.GOOS)
	}
	r, err := root()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(r, Hash()[:16])
	if _, err := os.Stat(filepath.Join(dir, "libcuda.so.1")); err == nil {
		now := time.Now()
		os.Chtimes(dir, now, now) // in use: keep it from pruneOld
		return dir, nil
	}
	defer pruneOld(r, dir)
	if err := os.MkdirAll(r, 0o755); err != nil {
		return "", fmt.Errorf("emu: %w", err)
	}
	// One process builds; the others wait for its result (a lock older
	// than a build can take is left by a killed process).
	lock := dir + ".lock"
	for {
		f, err := os.OpenFile(lock, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err == nil {
			f.Close()
			defer os.Remove(lock)
			break
		}
		if _, err := os.Stat(filepath.Join(dir, "libcuda.so.1")); err == nil {
			return dir, nil
		}
		if st, err := os.Stat(lock); err == nil && time.Since(st.ModTime()) > 5*time.Minute {
			os.Remove(lock)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "libcuda.so.1")); err == nil {
		return dir, nil
	}
	tmp, err := os.MkdirTemp(r, "build-")
	if err != nil {
		return "", fmt.Errorf("emu: %w", err)
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "src")
	for _, name := range files() {
		data, _ := sources.ReadFile(name)
		p := filepath.Join(src, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", fmt.Errorf("emu: %w", err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return "", fmt.Errorf("emu: %w", err)
		}
	}
	out := filepath.Join(tmp, "lib")
	cmd := exec.Command("bash", filepath.Join(src, "build.sh"), out)
	msg, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 127 {
			return "", fmt.Errorf("%w\n%s", ErrNoCompiler, msg)
		}
		return "", fmt.Errorf("emu: building the stand-ins failed: %v\n%s", err, msg)
	}
	if err := os.Rename(out, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "libcuda.so.1")); serr == nil {
			return dir, nil // another process finished first
		}
		return "", fmt.Errorf("emu: %w", err)
	}
	return dir, nil
}

// pruneOld removes builds of other sources unused for a week (builds in
// use are touched by every Build).
func pruneOld(root, keep string) {
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		p := filepath.Join(root, e.Name())
		info, err := e.Info()
		if err != nil || !e.IsDir() || p == keep || len(e.Name()) != 16 || time.Since(info.ModTime()) < 7*24*time.Hour {
			continue
		}
		os.RemoveAll(p)
	}
}

// Required reports whether the stand-ins must be available
// (MINITRON_REQUIRE_EMU=1, as CI sets it): then a missing compiler fails
// the tests that need them instead of skipping them.
func Required() bool { return os.Getenv("MINITRON_REQUIRE_EMU") == "1" }

// Dir returns the stand-ins' folder for a test, building them if needed.
// Without a C++ compiler it skips the test, or fails it when Required.
func Dir(t testing.TB) string {
	t.Helper()
	dir, err := Build()
	if err != nil {
		if errors.Is(err, ErrNoCompiler) && !Required() {
			t.Skipf("%v (the CPU stand-ins for the CUDA libraries need it; set MINITRON_REQUIRE_EMU=1 to make this a failure)", err)
		}
		t.Fatal(err)
	}
	if buildTook > time.Second {
		t.Logf("emu: stand-ins built in %v (%s)", buildTook.Round(time.Millisecond), dir)
	}
	return dir
}

// KernelCache is the MINITRON_CACHE the stand-ins' kernels are compiled
// into: inside their own folder, so a CPU build of the kernels never
// lands where a real GPU run would look for one.
func KernelCache(dir string) string { return filepath.Join(dir, "cache") }

// Env returns the environment of a process that runs the CUDA backend on
// the stand-ins in dir: the current one with dir first on
// LD_LIBRARY_PATH and MINITRON_CACHE set to KernelCache(dir), plus extra
// ("MINITRON_EMU_GPUS=2", ...).
func Env(dir string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LD_LIBRARY_PATH=") && !strings.HasPrefix(kv, "MINITRON_CACHE=") {
			env = append(env, kv)
		}
	}
	return append(append(env, "LD_LIBRARY_PATH="+libraryPath(dir), "MINITRON_CACHE="+KernelCache(dir)), extra...)
}

func libraryPath(dir string) string {
	if p := os.Getenv("LD_LIBRARY_PATH"); p != "" {
		return dir + string(os.PathListSeparator) + p
	}
	return dir
}

// Setenv points the CUDA backend of this process at the stand-ins (it
// reads LD_LIBRARY_PATH when it first loads the libraries) for the rest
// of the test.
func Setenv(t testing.TB, dir string) {
	t.Helper()
	t.Setenv("LD_LIBRARY_PATH", libraryPath(dir))
	t.Setenv("MINITRON_CACHE", KernelCache(dir))
}
