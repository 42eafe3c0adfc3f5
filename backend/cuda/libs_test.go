package cuda

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// staged is a fake file system with the listed files.
func staged(vars map[string]string, files ...string) env {
	set := map[string]bool{}
	for _, f := range files {
		set[f] = true
	}
	return env{
		getenv: func(k string) string { return vars[k] },
		exists: func(p string) bool { return set[p] },
		glob: func(pat string) ([]string, error) {
			var out []string
			seen := map[string]bool{}
			for f := range set {
				for d := f; d != "/" && d != "."; d = filepath.Dir(d) {
					if ok, _ := filepath.Match(pat, d); ok && !seen[d] {
						seen[d] = true
						out = append(out, d)
					}
				}
			}
			return out, nil
		},
	}
}

func TestFindLibraries(t *testing.T) {
	cases := []struct {
		name  string
		vars  map[string]string
		files []string
		names []string
		want  string
	}{
		{"system driver", nil, []string{"/usr/lib/x86_64-linux-gnu/libcuda.so.1"}, driverNames, "/usr/lib/x86_64-linux-gnu/libcuda.so.1"},
		{"LD_LIBRARY_PATH first", map[string]string{"LD_LIBRARY_PATH": "/opt/a:/opt/b"},
			[]string{"/opt/b/libnvrtc.so.12", "/usr/local/cuda/lib64/libnvrtc.so.12"}, nvrtcNames, "/opt/b/libnvrtc.so.12"},
		{"CUDA_HOME targets", map[string]string{"CUDA_HOME": "/opt/cuda"},
			[]string{"/opt/cuda/targets/x86_64-linux/lib/libcublas.so.13"}, cublasNames, "/opt/cuda/targets/x86_64-linux/lib/libcublas.so.13"},
		{"newest toolkit", nil, []string{"/usr/local/cuda-12.4/targets/x86_64-linux/lib/libnvrtc.so.12", "/usr/local/cuda-13.0/targets/x86_64-linux/lib/libnvrtc.so.13"},
			nvrtcNames, "/usr/local/cuda-13.0/targets/x86_64-linux/lib/libnvrtc.so.13"},
		{"python wheel", map[string]string{"VIRTUAL_ENV": "/venv"}, []string{"/venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublas.so.13"},
			cublasNames, "/venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublas.so.13"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := staged(c.vars, c.files...).find("x", c.names)
			if err != nil || got != c.want {
				t.Fatalf("found %q (%v), want %q", got, err, c.want)
			}
		})
	}
	_, err := staged(nil).find("NVRTC", nvrtcNames)
	var me *MissingError
	if !errors.As(err, &me) || !strings.Contains(err.Error(), "libnvrtc.so.13") || !strings.Contains(err.Error(), "/usr/local/cuda/lib64") || !strings.Contains(err.Error(), "CUDA_HOME") {
		t.Fatalf("missing library: %v", err)
	}
}
