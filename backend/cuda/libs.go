// Package cuda is the NVIDIA GPU backend. It binds the CUDA driver API,
// NVRTC and cuBLAS at run time through purego (dlopen, no cgo), so the
// binary builds with CGO_ENABLED=0 anywhere and needs no CUDA toolkit to
// build: kernels are CUDA C sources (package kernels) compiled by NVRTC for
// the GPU at hand and cached on disk. Tensors are bfloat16 on the device
// (int32 for ids); computation accumulates in float32.
package cuda

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// libSpec says how to find one library: its file names, newest first, and
// the libraries beside it that it opens by bare name or needs at load
// time (which the system loader would not find when its directory is not
// on the loader's path), as glob patterns for a CUDA major version (0:
// unknown).
type libSpec struct {
	what  string
	names []string
	deps  func(major int) []string
	// minVersion is the oldest version accepted (major*1000 + minor*10).
	minVersion int
}

// versionedDeps returns patterns for name.so.MAJOR and name.so.MAJOR.*,
// or name.so.* when the major version is unknown.
func versionedDeps(name string) func(int) []string {
	return func(major int) []string {
		if major == 0 {
			return []string{name + ".so.*"}
		}
		m := strconv.Itoa(major)
		return []string{name + ".so." + m, name + ".so." + m + ".*"}
	}
}

var (
	driverSpec = libSpec{what: "the CUDA driver", names: []string{"libcuda.so.1", "libcuda.so"}}
	// NVRTC loads libnvrtc-builtins.so.MAJOR.MINOR by bare name when it
	// compiles. CUDA 11.x's NVRTC is libnvrtc.so.11.2 for every 11.x.
	// 11.8 is the first to know sm_90.
	nvrtcSpec = libSpec{what: "NVRTC", names: []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"},
		deps: versionedDeps("libnvrtc-builtins"), minVersion: 11080}
	// libcublas.so.N needs libcublasLt.so.N.
	cublasSpec = libSpec{what: "cuBLAS", names: []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so"},
		deps: versionedDeps("libcublasLt")}
)

// env is what library discovery reads, so tests can stage it.
type env struct {
	getenv  func(string) string
	glob    func(string) ([]string, error)
	exists  func(string) bool
	ldcache func() map[string][]string // the system loader's cache, name to paths
}

var osEnv = env{getenv: os.Getenv, glob: filepath.Glob, exists: func(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}, ldcache: readLDCache}

// searchDirs lists the directories searched for CUDA libraries, in order:
// LD_LIBRARY_PATH, $CUDA_HOME (and $CUDA_PATH), where container images
// mount the driver (/usr/local/nvidia), the usual toolkit and distribution
// locations, then the nvidia/*/lib folders of Python site-packages (pip's
// CUDA wheels as PyTorch installs them: nvidia/cu13/lib, or one folder per
// library such as nvidia/cublas/lib), of the active environment and of
// virtual environments under /opt.
func (e env) searchDirs() []string {
	var dirs []string
	seen := map[string]bool{}
	add := func(d ...string) {
		for _, x := range d {
			if x != "" && !seen[x] {
				seen[x] = true
				dirs = append(dirs, x)
			}
		}
	}
	for _, d := range strings.Split(e.getenv("LD_LIBRARY_PATH"), ":") {
		add(d)
	}
	for _, k := range []string{"CUDA_HOME", "CUDA_PATH"} {
		if h := e.getenv(k); h != "" {
			add(filepath.Join(h, "lib64"), filepath.Join(h, "targets", "x86_64-linux", "lib"), filepath.Join(h, "lib"))
		}
	}
	add("/usr/local/nvidia/lib64", "/usr/local/nvidia/lib")
	add("/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib")
	versions, _ := e.glob("/usr/local/cuda-*")
	sort.Sort(sort.Reverse(sort.StringSlice(versions)))
	for _, v := range versions {
		add(filepath.Join(v, "targets", "x86_64-linux", "lib"), filepath.Join(v, "lib64"))
	}
	add("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/lib/x86_64-linux-gnu", "/usr/lib/wsl/lib")
	var sites []string
	for _, pat := range []string{"$VIRTUAL_ENV/lib/python3*/site-packages", "$CONDA_PREFIX/lib/python3*/site-packages",
		"$HOME/.local/lib/python3*/site-packages", "/usr/local/lib/python3*/dist-packages", "/usr/lib/python3*/dist-packages",
		"/usr/local/lib/python3*/site-packages", "/opt/conda/lib/python3*/site-packages",
		"/opt/*/.venv/lib/python3*/site-packages", "/opt/*/venv/lib/python3*/site-packages"} {
		p := os.Expand(pat, e.getenv)
		if strings.HasPrefix(p, "/lib") && !strings.HasPrefix(pat, "/") {
			continue // the variable was unset
		}
		m, _ := e.glob(p)
		sort.Strings(m)
		sites = append(sites, m...)
	}
	for _, s := range sites {
		libs, _ := e.glob(filepath.Join(s, "nvidia", "*", "lib"))
		sort.Strings(libs)
		add(libs...)
	}
	return dirs
}

// candidates returns the files of spec found, in the order they are
// tried: each search directory in turn (names newest first in each),
// then what the system loader's cache lists, then the bare names for
// the loader to resolve its own way. It also returns the directories
// searched.
func (e env) candidates(spec libSpec) (paths, dirs []string) {
	dirs = e.searchDirs()
	seen := map[string]bool{}
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			paths = append(paths, p)
		}
	}
	for _, d := range dirs {
		for _, n := range spec.names {
			if p := filepath.Join(d, n); e.exists(p) {
				add(p)
			}
		}
	}
	if e.ldcache != nil {
		cache := e.ldcache()
		for _, n := range spec.names {
			for _, p := range cache[n] {
				if e.exists(p) {
					add(p)
				}
			}
		}
	}
	for _, n := range spec.names {
		add(n)
	}
	return paths, dirs
}

// soMajor returns the major version in a library file name
// (libnvrtc.so.12 → 12, libnvrtc.so.11.2 → 11), or 0 when it has none.
func soMajor(path string) int {
	base := filepath.Base(path)
	i := strings.Index(base, ".so.")
	if i < 0 {
		return 0
	}
	v := base[i+4:]
	if j := strings.IndexByte(v, '.'); j >= 0 {
		v = v[:j]
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0
	}
	return n
}

// bareName reports whether p is a file name for the system loader to
// resolve rather than a path.
func bareName(p string) bool { return !strings.Contains(p, "/") }

// rejected is a library file that was found but not used, and why.
type rejected struct {
	Path   string
	Reason string
}

// openSpec opens the first candidate of spec that loads and, when
// maxMajor > 0, whose CUDA major version is at most maxMajor (a library
// newer than the driver produces code or calls the driver cannot serve).
// version reports a loaded library's version (major*1000 + minor*10) and
// is used when the file name does not tell the major version; it may be
// nil. A library older than spec.minVersion is skipped too. Dependencies
// beside a candidate are loaded first, globally.
func (e env) openSpec(spec libSpec, maxMajor int, version func(*library) int) (*library, error) {
	paths, dirs := e.candidates(spec)
	var rej []rejected
	for _, p := range paths {
		major := soMajor(p)
		if maxMajor > 0 && major > maxMajor {
			if !bareName(p) {
				rej = append(rej, rejected{p, fmt.Sprintf("CUDA %d is newer than the driver's CUDA %d", major, maxMajor)})
			}
			continue
		}
		if spec.deps != nil && !bareName(p) {
			if err := loadDeps(filepath.Dir(p), spec.deps(major), e.glob); err != nil {
				rej = append(rej, rejected{p, err.Error()})
				continue
			}
		}
		lib, err := openLibrary(spec.what, p)
		if err != nil {
			if !bareName(p) {
				rej = append(rej, rejected{p, err.Error()})
			}
			continue
		}
		if version != nil && ((maxMajor > 0 && major == 0) || spec.minVersion > 0) {
			v := version(lib)
			if v > 0 && maxMajor > 0 && v/1000 > maxMajor {
				rej = append(rej, rejected{lib.path, fmt.Sprintf("CUDA %d is newer than the driver's CUDA %d", v/1000, maxMajor)})
				continue
			}
			if v > 0 && v < spec.minVersion {
				rej = append(rej, rejected{lib.path, fmt.Sprintf("version %d.%d is older than %d.%d", v/1000, v%1000/10, spec.minVersion/1000, spec.minVersion%1000/10)})
				continue
			}
		}
		return lib, nil
	}
	return nil, &MissingError{What: spec.what, Names: spec.names, Dirs: dirs, Rejected: rej}
}

// loadDeps loads the files in dir matching any of patterns, globally.
func loadDeps(dir string, patterns []string, glob func(string) ([]string, error)) error {
	for _, pat := range patterns {
		m, _ := glob(filepath.Join(dir, pat))
		sort.Strings(m)
		for _, p := range m {
			if _, err := dlopen(p, true); err != nil {
				return fmt.Errorf("cuda: loading %s: %v", p, err)
			}
		}
	}
	return nil
}

// MissingError says which library was not found and where it was sought,
// and which files were found but could not be used.
type MissingError struct {
	What     string
	Names    []string
	Dirs     []string
	Rejected []rejected
}

func (m *MissingError) Error() string {
	hint := map[string]string{
		"the CUDA driver": "install the NVIDIA driver",
		"NVRTC":           "install the CUDA toolkit or `pip install nvidia-cuda-nvrtc-cu12`, or set CUDA_HOME",
		"cuBLAS":          "install the CUDA toolkit or `pip install nvidia-cublas-cu12`, or set CUDA_HOME",
		"NCCL":            "install NCCL (`apt install libnccl2`, or `pip install nvidia-nccl-cu12`), or set CUDA_HOME",
	}[m.What]
	shown := m.Dirs
	if len(shown) > 12 {
		shown = append(shown[:12:12], fmt.Sprintf("and %d more", len(m.Dirs)-12))
	}
	s := fmt.Sprintf("cuda: %s (%s) was not found in %s, nor by the system loader (%s)",
		m.What, strings.Join(m.Names, " or "), strings.Join(shown, ", "), ldCachePath)
	newer := false
	for _, r := range m.Rejected {
		s += fmt.Sprintf("; %s was skipped: %s", r.Path, r.Reason)
		newer = newer || strings.Contains(r.Reason, "newer than the driver")
	}
	if newer {
		hint = "update the NVIDIA driver, or install a " + m.What + " of the driver's CUDA version (or older)"
	}
	return s + "; " + hint + ", or add its directory to LD_LIBRARY_PATH"
}
