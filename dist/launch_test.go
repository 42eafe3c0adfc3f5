package dist

import (
	"strings"
	"testing"
)

func TestFromEnv(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		want Launch
		err  string
	}{
		{name: "alone", env: nil, want: Launch{Size: 1, Nodes: 1}},
		{name: "torchrun, one node", env: map[string]string{"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"},
			want: Launch{Launcher: "torchrun", Size: 1, Nodes: 1}},
		{name: "torchrun, four nodes", env: map[string]string{"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
			"MASTER_ADDR": "node01", "MASTER_PORT": "29400", "NNODES": "4", "NODE_RANK": "2", "TORCHELASTIC_RUN_ID": "j7"},
			want: Launch{Launcher: "torchrun", Rank: 2, Size: 4, Node: 2, Nodes: 4, Addr: "node01:29400", Job: "j7"}},
		{name: "torchrun whose agent keeps MASTER_PORT", env: map[string]string{"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "n1", "MASTER_PORT": "29500",
			"TORCHELASTIC_USE_AGENT_STORE": "True"}, want: Launch{Launcher: "torchrun", Size: 2, Nodes: 2, Addr: "n1:29501"}},
		{name: "torchrun's GROUP_RANK, default port", env: map[string]string{"WORLD_SIZE": "2", "RANK": "1", "GROUP_RANK": "1", "MASTER_ADDR": "10.0.0.1"},
			want: Launch{Launcher: "torchrun", Rank: 1, Size: 2, Node: 1, Nodes: 2, Addr: "10.0.0.1:29500"}},
		{name: "IPv6 rank 0", env: map[string]string{"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "fe80::1", "MASTER_PORT": "1234"},
			want: Launch{Launcher: "torchrun", Size: 2, Nodes: 2, Addr: "[fe80::1]:1234"}},
		{name: "torchrun wins over SLURM", env: map[string]string{"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "a", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"},
			want: Launch{Launcher: "torchrun", Rank: 1, Size: 2, Node: 1, Nodes: 2, Addr: "a:29500"}},
		{name: "SLURM", env: map[string]string{"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_NODEID": "3", "SLURM_NNODES": "4", "SLURM_LOCALID": "0",
			"SLURM_JOB_NODELIST": "gpu[007-010]", "SLURM_JOB_ID": "123456"},
			want: Launch{Launcher: "slurm", Rank: 3, Size: 4, Node: 3, Nodes: 4, Addr: "gpu007:23456", Job: "123456"}},
		{name: "SLURM with MASTER_ADDR and MASTER_PORT", env: map[string]string{"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_NNODES": "2",
			"SLURM_JOB_NODELIST": "a,b", "MASTER_ADDR": "head", "MASTER_PORT": "6000"},
			want: Launch{Launcher: "slurm", Size: 2, Nodes: 2, Addr: "head:6000"}},
		{name: "SLURM of one task", env: map[string]string{"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, want: Launch{Launcher: "slurm", Size: 1, Nodes: 1}},
		{name: "torchrun without MASTER_ADDR", env: map[string]string{"WORLD_SIZE": "2", "RANK": "0"}, err: "MASTER_ADDR is not set"},
		{name: "torchrun without RANK", env: map[string]string{"WORLD_SIZE": "2", "MASTER_ADDR": "a"}, err: "RANK is not"},
		{name: "rank beyond the world", env: map[string]string{"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "a"}, err: "rank 2 of 2"},
		{name: "eight processes per node", env: map[string]string{"WORLD_SIZE": "16", "RANK": "3", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "8", "MASTER_ADDR": "a"},
			err: "--nproc_per_node=1"},
		{name: "SLURM, tasks per GPU", env: map[string]string{"SLURM_PROCID": "1", "SLURM_NTASKS": "16", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "n[1-2]"},
			err: "--ntasks-per-node=1"},
		{name: "bad number", env: map[string]string{"WORLD_SIZE": "two", "RANK": "0"}, err: `WORLD_SIZE="two"`},
		{name: "bad port", env: map[string]string{"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "a", "MASTER_PORT": "99999"}, err: "not a port number"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := FromEnv(func(k string) string { return c.env[k] })
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one saying %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestFirstHost(t *testing.T) {
	for list, want := range map[string]string{
		"node01":                   "node01",
		"gpu[003-005,010],login1":  "gpu003",
		"login1,gpu[003-005]":      "login1",
		"n[07,09-12]":              "n07",
		"rack[1-2]-n[07-08]":       "rack1-n07",
		"a-[10-11]-b":              "a-10-b",
		" dgx[0001-0004] ":         "dgx0001",
		"ip-10-0-0-[12,14]":        "ip-10-0-0-12",
		"h100-[01-02],h100-[04-5]": "h100-01",
	} {
		if got, err := FirstHost(list); err != nil || got != want {
			t.Errorf("FirstHost(%q) = %q, %v; want %q", list, got, err, want)
		}
	}
	for _, bad := range []string{"", "n[1-2", "n[]", "n[[1]]", "[1-2]x]"} {
		if got, err := FirstHost(bad); err == nil || !strings.Contains(err.Error(), "MASTER_ADDR") {
			t.Errorf("FirstHost(%q) = %q, %v; want an error that suggests MASTER_ADDR", bad, got, err)
		}
	}
}
