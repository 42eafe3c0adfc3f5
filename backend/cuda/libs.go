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
	"strings"
)

// Library names, newest first.
var (
	driverNames = []string{"libcuda.so.1", "libcuda.so"}
	nvrtcNames  = []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"}
	cublasNames = []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so"}
)

// env is what library discovery reads, so tests can stage it.
type env struct {
	getenv func(string) string
	glob   func(string) ([]string, error)
	exists func(string) bool
}

var osEnv = env{getenv: os.Getenv, glob: filepath.Glob, exists: func(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}}

// searchDirs lists the directories searched for CUDA libraries, in order:
// LD_LIBRARY_PATH, $CUDA_HOME (and $CUDA_PATH), the usual toolkit and
// distribution locations, then the nvidia/*/lib folders of Python
// site-packages (pip's CUDA wheels, as PyTorch installs them).
func (e env) searchDirs() []string {
	var dirs []string
	add := func(d ...string) {
		for _, x := range d {
			if x != "" {
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
		"/usr/local/lib/python3*/site-packages", "/opt/conda/lib/python3*/site-packages"} {
		p := os.Expand(pat, e.getenv)
		if strings.HasPrefix(p, "/lib") && !strings.HasPrefix(pat, "/") {
			continue // the variable was unset
		}
		m, _ := e.glob(p)
		sites = append(sites, m...)
	}
	for _, s := range sites {
		libs, _ := e.glob(filepath.Join(s, "nvidia", "*", "lib"))
		sort.Strings(libs)
		add(libs...)
	}
	return dirs
}

// find returns the path of the first of names found in the search
// directories, or an error naming what was looked for and where.
func (e env) find(what string, names []string) (string, error) {
	dirs := e.searchDirs()
	for _, d := range dirs {
		for _, n := range names {
			if p := filepath.Join(d, n); e.exists(p) {
				return p, nil
			}
		}
	}
	return "", &MissingError{What: what, Names: names, Dirs: dirs}
}

// MissingError says which library was not found and where it was sought.
type MissingError struct {
	What  string
	Names []string
	Dirs  []string
}

func (m *MissingError) Error() string {
	hint := map[string]string{
		"the CUDA driver": "install the NVIDIA driver",
		"NVRTC":           "install the CUDA toolkit or `pip install nvidia-cuda-nvrtc-cu12`, or set CUDA_HOME",
		"cuBLAS":          "install the CUDA toolkit or `pip install nvidia-cublas-cu12`, or set CUDA_HOME",
	}[m.What]
	shown := m.Dirs
	if len(shown) > 12 {
		shown = append(shown[:12:12], fmt.Sprintf("and %d more", len(m.Dirs)-12))
	}
	return fmt.Sprintf("cuda: %s (%s) was not found in %s; %s, or add its directory to LD_LIBRARY_PATH",
		m.What, strings.Join(m.Names, " or "), strings.Join(shown, ", "), hint)
}
