package main

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/tokenizer"
)

func newData() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "data COMMAND",
		Short: "Prepare tokenized datasets and inspect them",
		Long: `data makes and reads the tokenized datasets training, distillation,
importance scoring and evaluation read:

  prepare   tokenize text, JSON lines and Parquet files into a dataset
            directory of zstd Arrow IPC token shards and a manifest
  inspect   summarize a dataset: tokenizer, inputs, documents, tokens,
            shards, document lengths, and a few decoded documents

A dataset is named by its directory in configurations and recipes.`,
	}
	groupOnly(cmd)
	cmd.AddCommand(newDataPrepare(), newDataInspect())
	return cmd
}

func newDataPrepare() *cobra.Command {
	var opt data.PrepareOptions
	var tokPath string
	var shardMB int
	cmd := &cobra.Command{
		Use:   "prepare --tokenizer PATH --input PATH... --out DIR",
		Short: "Tokenize text, JSON lines and Parquet files into Arrow token shards",
		Long: `prepare tokenizes the inputs in parallel and writes a dataset directory:
zstd-compressed Arrow IPC shards of the token stream with document boundaries,
and manifest.json (tokenizer hash, inputs with checksums, counts, shards with
checksums), written last.

Inputs: plain text files (a file is a document; --split-lines makes each line
one), directories (walked in order, hidden entries skipped, --include to
filter), JSON lines (.jsonl, .jsonl.gz, .jsonl.zst; --text-field picks the
field) and Parquet files (--text-field picks the string column). Documents are
separated by EOS, and start with BOS when --bos is given. Documents that are
empty or only whitespace (spaces, tabs, newlines) are skipped: the summary
counts them.

Rerunning on the same inputs keeps a finished dataset; an interrupted run
leaves nothing a reader accepts and is redone from the start; a failed run
removes --out when it created it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := tokenizer.Open(tokPath)
			if err != nil {
				return err
			}
			opt.Tokenizer, opt.TokenizerPath = tok, tokPath
			opt.ShardTokens = int64(shardMB) << 20 / 4
			bar := newBar(0, "tokenizing")
			opt.Progress = func(done, total int64) {
				if bar != nil {
					bar.ChangeMax64(total)
					bar.Set64(done)
				}
			}
			start := time.Now()
			m, err := data.Prepare(cmd.Context(), opt)
			if bar != nil {
				bar.Finish()
			}
			if err != nil {
				return err
			}
			secs := time.Since(start).Seconds()
			var in int64
			for _, i := range m.Inputs {
				in += i.Bytes
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d documents, %d tokens in %d shard(s) from %d input file(s) (%s); skipped %d empty or whitespace-only documents, %d bad records; %.1fs, %.1f MB/s\n",
				opt.Out, m.Documents, m.Tokens, len(m.Shards), len(m.Inputs), human(in), m.EmptyDocuments, m.SkippedRecords, secs, float64(in)/1e6/secs)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&tokPath, "tokenizer", "", "SentencePiece .model, tokenizer.json, or a model directory")
	f.StringSliceVar(&opt.Inputs, "input", nil, "input files or directories (repeat or comma-separate)")
	f.StringSliceVar(&opt.Include, "include", nil, "only files in directories whose name matches these globs, e.g. '*.go'")
	f.StringVar(&opt.Out, "out", "", "output dataset directory")
	f.StringVar(&opt.TextField, "text-field", "text", "JSON lines field or Parquet column holding the text")
	f.BoolVar(&opt.SplitLines, "split-lines", false, "each line of a plain text file is a document")
	f.BoolVar(&opt.AddBOS, "bos", false, "start every document with BOS")
	f.BoolVar(&opt.AddEOS, "eos", true, "end every document with EOS")
	f.StringVar(&opt.OnError, "on-error", "fail", "a bad record (invalid JSON, non-string field): fail, or skip and count it")
	f.IntVar(&opt.BatchTokens, "batch-tokens", 1<<16, "tokens per Arrow record batch (the unit of random access)")
	f.IntVar(&shardMB, "shard-mb", 256, "uncompressed size of a shard in MB")
	f.IntVar(&opt.Workers, "workers", 0, "tokenizing goroutines (default: all cores)")
	for _, n := range []string{"tokenizer", "input", "out"} {
		cmd.MarkFlagRequired(n)
	}
	return cmd
}

func newDataInspect() *cobra.Command {
	var tokPath string
	var samples, sampleTokens int
	var verify bool
	cmd := &cobra.Command{
		Use:   "inspect DIR",
		Short: "Summarize a prepared dataset: counts, shards, document lengths, samples",
		Long: `inspect reads a dataset directory made by data prepare and prints its
manifest (tokenizer, inputs, documents, tokens, shards and their size on
disk), a histogram of document lengths in tokens, and the first --samples
documents decoded with the tokenizer the manifest records (or --tokenizer,
which must be the same one: its hash is checked). --verify also checks
every shard against the checksum in the manifest.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ds, err := data.Open(args[0])
			if err != nil {
				return err
			}
			defer ds.Close()
			if verify {
				if err := ds.Verify(); err != nil {
					return err
				}
			}
			m := ds.Manifest
			w := cmd.OutOrStdout()
			var in, disk int64
			for _, i := range m.Inputs {
				in += i.Bytes
			}
			for _, s := range m.Shards {
				disk += s.Bytes
			}
			fmt.Fprintf(w, "dataset    %s (created %s)\n", args[0], m.Created.Format(time.RFC3339))
			fmt.Fprintf(w, "tokenizer  %s (vocab %d, sha256 %.12s), bos=%v eos=%v\n", m.Tokenizer.Path, m.Tokenizer.VocabSize, m.Tokenizer.Hash, m.Options.AddBOS, m.Options.AddEOS)
			fmt.Fprintf(w, "inputs     %d file(s), %s\n", len(m.Inputs), human(in))
			fmt.Fprintf(w, "documents  %d (%d empty skipped, %d bad records skipped)\n", m.Documents, m.EmptyDocuments, m.SkippedRecords)
			fmt.Fprintf(w, "tokens     %d (%.2f bytes of input per token)\n", m.Tokens, float64(in)/float64(max(m.Tokens, 1)))
			fmt.Fprintf(w, "shards     %d, %s on disk (%.1fx compression)\n", len(m.Shards), human(disk), float64(4*m.Tokens)/float64(max(disk, 1)))
			var lengths []int
			var decoded []string
			var tok tokenizer.Tokenizer
			if tokPath == "" {
				tokPath = m.Tokenizer.Path
			}
			if t, err := tokenizer.Open(tokPath); err == nil && t.Hash() == m.Tokenizer.Hash {
				tok = t
			}
			err = ds.Documents(func(doc []int32) bool {
				lengths = append(lengths, len(doc))
				if tok != nil && len(decoded) < samples {
					decoded = append(decoded, tok.Decode(doc[:min(len(doc), sampleTokens)]))
				}
				return true
			})
			if err != nil {
				return err
			}
			printHistogram(w, lengths)
			if tok == nil {
				fmt.Fprintf(w, "(no samples: tokenizer %q not found or not the one used; pass --tokenizer)\n", tokPath)
			}
			for i, s := range decoded {
				fmt.Fprintf(w, "--- document %d ---\n%s\n", i, s)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&tokPath, "tokenizer", "", "tokenizer to decode samples with (default: the one recorded in the manifest)")
	f.IntVar(&samples, "samples", 3, "number of documents to decode and print")
	f.IntVar(&sampleTokens, "sample-tokens", 80, "tokens of each sample to print")
	f.BoolVar(&verify, "verify", false, "check every shard's checksum")
	return cmd
}

// printHistogram prints document lengths in power-of-two buckets.
func printHistogram(w interface{ Write([]byte) (int, error) }, lengths []int) {
	if len(lengths) == 0 {
		return
	}
	sort.Ints(lengths)
	buckets := map[int]int{}
	top := 0
	for _, l := range lengths {
		b := int(math.Ceil(math.Log2(float64(max(l, 1)))))
		buckets[b]++
		top = max(top, b)
	}
	most := 0
	for _, c := range buckets {
		most = max(most, c)
	}
	fmt.Fprintf(w, "document length: min %d, median %d, mean %.0f, max %d tokens\n", lengths[0], lengths[len(lengths)/2], mean(lengths), lengths[len(lengths)-1])
	for b := 0; b <= top; b++ {
		lo := 1<<max(b-1, 0) + 1 // bucket b holds lengths in (2^(b-1), 2^b]
		if b == 0 {
			lo = 1
		}
		c := buckets[b]
		fmt.Fprintf(w, "  %7d-%-7d %8d %s\n", lo, 1<<b, c, strings.Repeat("#", (c*40+most-1)/most))
	}
}

func mean(v []int) float64 {
	var s float64
	for _, x := range v {
		s += float64(x)
	}
	return s / float64(len(v))
}
