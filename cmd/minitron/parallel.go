package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/backend/cuda"
	"github.com/minitron/minitron/dist"
	"github.com/minitron/minitron/train"
)

// comms holds the communicators a command opened; closeBackends closes
// them before the backends.
var comms []io.Closer

// trainingDevices is what train and distill run on: one device, or the
// GPUs of a data-parallel run that this process drives.
type trainingDevices struct {
	single   backend.Backend
	backends []backend.Backend
	group    *dist.Group
	comms    []dist.Comm
	plan     *dist.Plan
}

// parallel reports whether the run is data-parallel.
func (d *trainingDevices) parallel() bool { return d.group != nil }

// writes reports whether this process writes the run's logs and model
// (it holds global rank 0).
func (d *trainingDevices) writes() bool { return d.plan == nil || d.plan.First == 0 }

// replicas returns the data-parallel ranks of this process.
func (d *trainingDevices) replicas() []train.Replica { return train.Replicas(d.backends, d.comms) }

// addRendezvousTimeout registers --rendezvous-timeout.
func addRendezvousTimeout(cmd *cobra.Command, timeout *time.Duration) {
	def := dist.DefaultTimeout
	if s := os.Getenv("MINITRON_RENDEZVOUS_TIMEOUT"); s != "" {
		if d, err := time.ParseDuration(s); err == nil && d > 0 {
			def = d
		}
	}
	cmd.Flags().DurationVar(timeout, "rendezvous-timeout", def, "how long the processes of a multi-node run wait for each other at the start (default from MINITRON_RENDEZVOUS_TIMEOUT)")
}

// openTraining opens the devices of a training run. --device cpu is the
// CPU; cuda is every visible GPU and cuda:0,1,... those GPUs: one GPU
// runs alone, several (or a job a launcher started on several nodes,
// torchrun's or SLURM's variables say) train data-parallel, one
// goroutine per GPU, the processes having met at MASTER_ADDR:MASTER_PORT
// to share the NCCL id.
func openTraining(ctx context.Context, cfg *train.Config, timeout time.Duration) (*trainingDevices, error) {
	dev := cfg.Device
	spec, err := parseDevice(dev)
	if err != nil {
		return nil, err
	}
	launch, err := dist.FromEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	if !spec.cuda {
		if !launch.Single() {
			return nil, fmt.Errorf("%s started %d processes, but the device is %s: a run over several nodes trains on GPUs (set device: cuda)", launch.Launcher, launch.Size, dev)
		}
		return &trainingDevices{single: cpu.New()}, nil
	}
	n, err := cuda.DeviceCount()
	if err != nil {
		return nil, fmt.Errorf("--device %s: %w (use --device cpu to run without a GPU)", dev, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("--device %s: no GPU is visible; check nvidia-smi and CUDA_VISIBLE_DEVICES", dev)
	}
	gpus := spec.gpus
	for _, g := range gpus {
		if g >= n {
			return nil, fmt.Errorf("--device %s: GPU %d requested but %d visible (check CUDA_VISIBLE_DEVICES)", dev, g, n)
		}
	}
	if gpus == nil {
		for i := range n {
			gpus = append(gpus, i)
		}
	}
	if len(gpus) == 1 && launch.Single() {
		b, err := openGPU(dev, gpus[0])
		if err != nil {
			return nil, err
		}
		return &trainingDevices{single: b}, nil
	}
	if launch.Single() {
		if err := train.CheckGPUs(cfg, len(gpus)); err != nil {
			return nil, err
		}
	}
	if !launch.Single() {
		fmt.Fprintf(os.Stderr, "data parallel: process %d of %d (%s) meeting the others at %s (waiting up to %v)\n",
			launch.Rank, launch.Size, launch.Launcher, launch.Addr, timeout)
	}
	plan, err := dist.Rendezvous(ctx, launch, len(gpus), func() ([]byte, error) {
		id, err := cuda.NewUniqueID()
		return id[:], err
	}, timeout)
	if err != nil {
		return nil, fmt.Errorf("--device %s: %w", dev, err)
	}
	var id cuda.UniqueID
	if len(plan.ID) != len(id) {
		return nil, fmt.Errorf("--device %s: rank 0 sent an NCCL id of %d bytes, want %d (mixed minitron versions?)", dev, len(plan.ID), len(id))
	}
	copy(id[:], plan.ID)
	if err := train.CheckGPUs(cfg, plan.World); err != nil {
		return nil, err
	}
	where := ""
	if !launch.Single() {
		where = fmt.Sprintf("process %d of %d (%s, %s), ", launch.Rank, launch.Size, launch.Launcher, plan.Hosts[launch.Rank])
	}
	fmt.Fprintf(os.Stderr, "data parallel: %sGPUs %v as ranks %d to %d of %d\n", where, gpus, plan.First, plan.First+len(gpus)-1, plan.World)
	d := &trainingDevices{plan: plan}
	for _, o := range gpus {
		b, err := openGPU(dev, o)
		if err != nil {
			return nil, err
		}
		d.backends = append(d.backends, b)
	}
	cs := make([]*cuda.Comm, len(gpus))
	d.group = dist.NewGroup(len(gpus), func() {
		for _, c := range cs {
			if c != nil {
				c.Abort()
			}
		}
	})
	groups = append(groups, d.group)
	err = d.group.Do(func(i int) error {
		var err error
		cs[i], err = d.backends[i].(*cuda.Backend).NewComm(id, plan.First+i, plan.World)
		return err
	})
	for _, c := range cs {
		if c != nil {
			comms = append(comms, c)
			d.comms = append(d.comms, c)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("--device %s: joining the GPUs: %w", dev, err)
	}
	return d, nil
}

// groups are the goroutine groups a command started, stopped at exit.
var groups []*dist.Group
