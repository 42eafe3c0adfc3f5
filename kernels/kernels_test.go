package kernels

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestKernelsParse(t *testing.T) {
	ks, err := Kernels()
	if err != nil {
		t.Fatal(err)
	}
	// Spot-check declarations against the sources.
	for name, want := range map[string]string{
		"add":                      "pppl",
		"adamw":                    "pppp" + "ll" + "ffffffff" + "u",
		"attention_fwd_d128":       "pppppppp" + "iiiii" + "f" + "i",
		"attention_bwd_d64":        "ppppppppppppp" + "iiiii" + "f",
		"cross_entropy":            "pppp" + "ii" + "f" + "p",
		"kl_topk":                  "ppppp" + "iii" + "f" + "ii" + "f" + "p",
		"rope":                     "ppp" + "iiiii",
		"norm_backward_dw_partial": "pppp" + "iiii",
	} {
		k, ok := ks[name]
		if !ok {
			t.Fatalf("kernel %s not found", name)
		}
		var got strings.Builder
		for _, p := range k.Params {
			got.WriteByte(byte(p.Kind))
		}
		if got.String() != want {
			t.Errorf("%s: parameter kinds %q, want %q", name, got.String(), want)
		}
	}
	if len(ks) < 20 {
		t.Errorf("only %d kernels parsed", len(ks))
	}
	// Every kernel declares the block size it is compiled for.
	for name, k := range ks {
		if k.MaxThreads == 0 {
			t.Errorf("%s (%s) declares no __launch_bounds__", name, k.File)
		}
	}
	for name, want := range map[string]int{"layernorm": 1024, "adamw": 256, "attention_bwd_d128": 256, "attention_fwd_d128": 128} {
		if got := ks[name].MaxThreads; got != want {
			t.Errorf("%s: launch bounds %d, want %d", name, got, want)
		}
	}
}

func TestLaunchBoundsParse(t *testing.T) {
	for _, c := range []struct {
		decl string
		name string
		max  int
	}{
		{`extern "C" __global__ void k(int n)`, "k", 0},
		{`extern "C" __global__ void __launch_bounds__(256) k2(int n)`, "k2", 256},
		{"extern \"C\" __global__ void  __launch_bounds__( 1024 )\n  k3(int n)", "k3", 1024},
		{`extern "C" __global__ void __launch_bounds__(128, 2) k4(int n)`, "k4", 128},
	} {
		m := declRE.FindStringSubmatch(c.decl)
		if m == nil || m[2] != c.name {
			t.Errorf("%q: matched %q", c.decl, m)
			continue
		}
		if got, _ := strconv.Atoi("0" + m[1]); got != c.max {
			t.Errorf("%q: bounds %d, want %d", c.decl, got, c.max)
		}
	}
}

func TestSourceAssembly(t *testing.T) {
	src := Source()
	if !strings.HasPrefix(src, "#line 1 \"common.cuh\"\n") {
		t.Fatalf("source does not start with the common header: %q", src[:40])
	}
	// Every .cu file is present once, after the header.
	hdr := strings.Index(src, "#line 1 \"common.cuh\"")
	for _, f := range names()[1:] {
		i := strings.Index(src, "#line 1 \""+f+"\"")
		if i <= hdr {
			t.Errorf("%s missing or before the header", f)
		}
		if strings.Count(src, "#line 1 \""+f+"\"") != 1 {
			t.Errorf("%s included more than once", f)
		}
	}
	// The hash names the compiled-kernel cache: it is the SHA-256 of the
	// assembled source, so any change to a kernel changes it.
	if sum := sha256.Sum256([]byte(src)); Hash() != hex.EncodeToString(sum[:]) {
		t.Fatalf("hash %q is not the SHA-256 of the source", Hash())
	}
}

func TestParseParamErrors(t *testing.T) {
	for _, p := range []string{"double x", "bool flag", "x"} {
		if _, _, err := parseParam(p); err == nil {
			t.Errorf("parameter %q accepted", p)
		}
	}
	for p, want := range map[string]Kind{"const void* x": Ptr, "float* part": Ptr, "i64 n": Int64, "u32 seed": Uint, "const int* ids": Ptr, "float eps": Float} {
		k, _, err := parseParam(p)
		if err != nil || k != want {
			t.Errorf("%q: %c %v, want %c", p, k, err, want)
		}
	}
}

// TestClangSyntax runs clang's CUDA front end over the assembled source
// (full parsing and type checking, no code generation), so kernel source
// errors show up on machines without a GPU. .ci/run installs clang.
func TestClangSyntax(t *testing.T) {
	clang := ""
	for _, c := range []string{"clang-14", "clang", "clang-15", "clang-16", "clang-17", "clang-18", "clang-19"} {
		if p, err := exec.LookPath(c); err == nil {
			clang = p
			break
		}
	}
	if clang == "" {
		t.Skip("clang is not installed (apt-get install clang-14); the kernels are checked by NVRTC on a GPU machine instead")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "kernels.cu")
	if err := os.WriteFile(src, []byte(Source()), 0o644); err != nil {
		t.Fatal(err)
	}
	shim, err := filepath.Abs("testdata/clang_shim.h")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(clang, "-x", "cuda", "--cuda-device-only", "--cuda-gpu-arch=sm_80", "-nocudainc", "-nocudalib",
		"-fsyntax-only", "-Wall", "-Werror", "-include", shim, src)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", clang, err, out)
	}
}

// TestWarpMMAEmulation builds testdata/warp_mma.cc, which runs the
// tensor-core helpers of common.cuh as the CPU stand-ins compile them
// (backend/cuda/emu/prelude/10-warp-mma.h) on one warp of threads and
// compares every product with a direct computation.
func TestWarpMMAEmulation(t *testing.T) {
	cxx := ""
	for _, c := range []string{"clang++-14", "clang++", "clang++-15", "clang++-16", "clang++-17", "clang++-18", "clang++-19", "g++"} {
		if p, err := exec.LookPath(c); err == nil {
			cxx = p
			break
		}
	}
	if cxx == "" {
		if os.Getenv("MINITRON_REQUIRE_EMU") == "1" {
			t.Fatal("no C++ compiler found (apt-get install clang-14)")
		}
		t.Skip("no C++ compiler (apt-get install clang-14); the emulated warp instructions are not checked")
	}
	bin := filepath.Join(t.TempDir(), "warp_mma")
	cmd := exec.Command(cxx, "-std=c++17", "-O1", "-pthread", "-Wall", "-Werror", "-I", "../backend/cuda/emu/prelude", "-o", bin, "testdata/warp_mma.cc")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cxx, err, out)
	}
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "ok") {
		t.Fatalf("warp_mma: %v\n%s", err, out)
	}
}
