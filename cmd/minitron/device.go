package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/backend/cuda"
	"github.com/minitron/minitron/model"
)

// addDevice registers --device on a command.
func addDevice(cmd *cobra.Command, dev *string) {
	cmd.Flags().StringVar(dev, "device", "cpu", "compute device: cpu (float32), or cuda / cuda:N (bfloat16 on NVIDIA GPU N, GPU 0 for cuda; needs the driver, NVRTC and cuBLAS, found on LD_LIBRARY_PATH, $CUDA_HOME or a Python nvidia/*/lib folder)")
}

// deviceSpec is a parsed --device: the CPU, or GPUs by number (nil:
// every visible GPU).
type deviceSpec struct {
	cuda bool
	gpus []int
}

// parseDevice reads cpu, cuda (or gpu), cuda:N or cuda:N,M,...
func parseDevice(dev string) (deviceSpec, error) {
	d := strings.ToLower(strings.TrimSpace(dev))
	switch {
	case d == "cpu":
		return deviceSpec{}, nil
	case d == "cuda" || d == "gpu":
		return deviceSpec{cuda: true}, nil
	case strings.HasPrefix(d, "cuda:") || strings.HasPrefix(d, "gpu:"):
		spec := deviceSpec{cuda: true}
		seen := map[int]bool{}
		for _, f := range strings.Split(d[strings.IndexByte(d, ':')+1:], ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 0 {
				return spec, fmt.Errorf("--device %q: the GPU numbers after cuda: must be non-negative integers separated by commas (cuda:0,1)", dev)
			}
			if seen[n] {
				return spec, fmt.Errorf("--device %q: GPU %d is listed twice", dev, n)
			}
			seen[n] = true
			spec.gpus = append(spec.gpus, n)
		}
		return spec, nil
	}
	return deviceSpec{}, fmt.Errorf("unknown --device %q (use cpu, cuda, cuda:N or cuda:N,M,...)", dev)
}

// openBackend returns the backend for a --device value, for commands
// that run on one device: of a list of GPUs the first, and GPU 0 for cuda.
func openBackend(dev string) (backend.Backend, error) {
	spec, err := parseDevice(dev)
	if err != nil {
		return nil, err
	}
	if !spec.cuda {
		return cpu.New(), nil
	}
	ordinal := 0
	if len(spec.gpus) > 0 {
		ordinal = spec.gpus[0]
	}
	return openGPU(dev, ordinal)
}

// openGPU opens GPU ordinal; dev names the --device value in errors.
func openGPU(dev string, ordinal int) (*cuda.Backend, error) {
	b, err := cuda.Open(cuda.Options{Device: ordinal, Log: func(s string) { fmt.Fprintln(os.Stderr, s) }})
	if err != nil {
		return nil, fmt.Errorf("--device %s: %w (use --device cpu to run without a GPU)", dev, err)
	}
	opened = append(opened, b)
	return b, nil
}

// opened holds the backends openBackend opened, which closeBackends
// closes when the command has finished.
var opened []io.Closer

// closeBackends closes the backends opened (communicators first),
// reporting failures on stderr.
func closeBackends() {
	for _, c := range comms {
		if err := c.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "minitron: closing the communicator:", err)
		}
	}
	comms = nil
	for _, b := range opened {
		if err := b.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "minitron: closing the device:", err)
		}
	}
	opened = nil
	for _, g := range groups {
		g.Close()
	}
	groups = nil
}

// onInterrupt returns a channel closed at the first SIGINT (the running
// step finishes and a checkpoint is written; a second SIGINT aborts) and a
// function that stops listening.
func onInterrupt() (<-chan struct{}, func()) {
	interrupt := make(chan struct{})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	go func() {
		if _, ok := <-sig; ok {
			fmt.Fprintln(os.Stderr, "\ninterrupt: finishing the step and writing a checkpoint (Ctrl-C again to abort)")
			close(interrupt)
			signal.Stop(sig)
		}
	}()
	return interrupt, func() { signal.Stop(sig) }
}

// interactive reports whether stderr is a terminal (progress bars go there).
func interactive() bool { return term.IsTerminal(int(os.Stderr.Fd())) }

// newBar returns a byte-count progress bar on stderr, or nil when stderr is
// not a terminal.
func newBar(total int64, desc string) *progressbar.ProgressBar {
	if !interactive() {
		return nil
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionClearOnFinish(),
	)
}

// loadModel loads a checkpoint directory with a progress bar.
func loadModel(dir string, b backend.Backend) (*model.Model, error) {
	var bar *progressbar.ProgressBar
	m, err := model.Load(dir, b, func(done, total int64) {
		if bar == nil {
			bar = newBar(total, "loading "+dir)
		}
		if bar != nil {
			bar.Set64(done)
		}
	})
	if bar != nil {
		bar.Finish()
	}
	// Give the conversion buffers of loading back to the OS now rather than
	// whenever the scavenger gets to them: they are as large as the biggest
	// tensors, and the run that follows needs the room.
	debug.FreeOSMemory()
	return m, err
}

// human formats a byte count.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for x := n / unit; x >= unit; x /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// count formats a parameter count (4.19B, 26.2M).
func count(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fK", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}
