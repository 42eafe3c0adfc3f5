package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/internal/ordered"
	"github.com/minitron/minitron/tokenizer"
)

func newTokenize() *cobra.Command {
	var path, text string
	var jsonl, lines, decode, bos, eos bool
	cmd := &cobra.Command{
		Use:   "tokenize --tokenizer PATH (--text TEXT | --jsonl) [--decode]",
		Short: "Turn text into token ids, or ids into text",
		Long: `tokenize encodes text with a SentencePiece .model, a tokenizer.json, or the
tokenizer of a model directory, exactly as the reference libraries do.

  --text TEXT          print the ids of TEXT, space-separated
  --jsonl              read {"text": ...} lines on stdin, write {"ids": [...]}
                       lines in the same order (encoded in parallel)
  --lines              read plain text on stdin, write the ids of each line
                       on its own line (like spm_encode --output_format id)
  --decode             the reverse: --text "1 2 3" or {"ids": [...]} lines in,
                       text or {"text": ...} lines out

Ids exclude BOS and EOS unless --bos / --eos ask for them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			modes := 0
			for _, on := range []bool{cmd.Flags().Changed("text"), jsonl, lines} {
				if on {
					modes++
				}
			}
			if modes != 1 {
				return fmt.Errorf("give exactly one of --text TEXT, --jsonl or --lines")
			}
			tok, err := tokenizer.Open(path)
			if err != nil {
				return err
			}
			if (bos && tok.BOS() < 0) || (eos && tok.EOS() < 0) {
				return fmt.Errorf("%s defines no BOS/EOS token to add", path)
			}
			out := bufio.NewWriterSize(cmd.OutOrStdout(), 1<<20)
			defer out.Flush()
			enc := func(s string) []int32 {
				ids := []int32{} // JSON [] for a text with no tokens
				if bos {
					ids = append(ids, tok.BOS())
				}
				ids = tok.AppendEncode(ids, s)
				if eos {
					ids = append(ids, tok.EOS())
				}
				return ids
			}
			if lines {
				return mapLinesRaw(cmd.InOrStdin(), out, func(line []byte, n int) ([]byte, error) {
					if decode {
						ids, err := parseIDs(string(line))
						if err != nil && len(strings.TrimSpace(string(line))) > 0 {
							return nil, fmt.Errorf("stdin line %d: %w", n, err)
						}
						if err := checkIDs(ids, tok.VocabSize()); err != nil {
							return nil, fmt.Errorf("stdin line %d: %w", n, err)
						}
						return []byte(tok.Decode(ids)), nil
					}
					return []byte(joinIDs(enc(string(line)))), nil
				})
			}
			if !jsonl {
				if decode {
					ids, err := parseIDs(text)
					if err == nil {
						err = checkIDs(ids, tok.VocabSize())
					}
					if err != nil {
						return fmt.Errorf("--text: %w", err)
					}
					fmt.Fprintln(out, tok.Decode(ids))
					return nil
				}
				fmt.Fprintln(out, joinIDs(enc(text)))
				return nil
			}
			return mapLines(cmd.InOrStdin(), out, func(line []byte, n int) ([]byte, error) {
				if decode {
					var in struct {
						IDs *[]int32 `json:"ids"`
					}
					if err := json.Unmarshal(line, &in); err != nil || in.IDs == nil {
						return nil, fmt.Errorf("stdin line %d: want {\"ids\": [...]}, got %.60q", n, line)
					}
					if err := checkIDs(*in.IDs, tok.VocabSize()); err != nil {
						return nil, fmt.Errorf("stdin line %d: %w", n, err)
					}
					return json.Marshal(map[string]string{"text": tok.Decode(*in.IDs)})
				}
				var in struct {
					Text *string `json:"text"`
				}
				if err := json.Unmarshal(line, &in); err != nil || in.Text == nil {
					return nil, fmt.Errorf("stdin line %d: want {\"text\": \"...\"}, got %.60q", n, line)
				}
				return json.Marshal(map[string][]int32{"ids": enc(*in.Text)})
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&path, "tokenizer", "", "SentencePiece .model, tokenizer.json, or a model directory")
	f.StringVar(&text, "text", "", "text to encode (or ids to decode with --decode)")
	f.BoolVar(&jsonl, "jsonl", false, "read JSON lines on stdin and write JSON lines")
	f.BoolVar(&lines, "lines", false, "read plain text lines on stdin and write one id line per line")
	f.BoolVar(&decode, "decode", false, "decode ids into text")
	f.BoolVar(&bos, "bos", false, "prepend the BOS token")
	f.BoolVar(&eos, "eos", false, "append the EOS token")
	cmd.MarkFlagRequired("tokenizer")
	return cmd
}

// checkIDs reports the first id outside a vocabulary of vocab tokens.
func checkIDs(ids []int32, vocab int) error {
	for _, id := range ids {
		if id < 0 || int(id) >= vocab {
			return fmt.Errorf("token id %d is outside the vocabulary of %d tokens (ids 0 to %d)", id, vocab, vocab-1)
		}
	}
	return nil
}

func joinIDs(ids []int32) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(int(id)))
	}
	return b.String()
}

// mapLines applies f to every non-empty line of r on all cores and writes
// the results in input order, one per line.
func mapLines(r io.Reader, w io.Writer, f func(line []byte, n int) ([]byte, error)) error {
	return mapLinesOpt(r, w, false, f)
}

// mapLinesRaw is mapLines keeping empty lines (each gives an output line).
func mapLinesRaw(r io.Reader, w io.Writer, f func(line []byte, n int) ([]byte, error)) error {
	return mapLinesOpt(r, w, true, f)
}

// lineChunk is a run of input lines and their line numbers (from 1).
type lineChunk struct {
	lines [][]byte
	nums  []int
}

func mapLinesOpt(r io.Reader, w io.Writer, keepEmpty bool, f func(line []byte, n int) ([]byte, error)) error {
	read := func(send func(lineChunk) error) error {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 256<<20)
		n := 0
		var c lineChunk
		for sc.Scan() {
			n++
			line := sc.Bytes()
			if !keepEmpty && len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			c.lines = append(c.lines, append([]byte(nil), line...))
			c.nums = append(c.nums, n)
			if len(c.lines) == 256 {
				if err := send(c); err != nil {
					return err
				}
				c = lineChunk{}
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("reading stdin: %w", err)
		}
		if len(c.lines) > 0 {
			return send(c)
		}
		return nil
	}
	apply := func(c lineChunk) ([][]byte, error) {
		out := make([][]byte, len(c.lines))
		for i, l := range c.lines {
			o, err := f(l, c.nums[i])
			if err != nil {
				return nil, err
			}
			out[i] = append(o, '\n')
		}
		return out, nil
	}
	write := func(out [][]byte) error {
		for _, o := range out {
			if _, err := w.Write(o); err != nil {
				return err
			}
		}
		return nil
	}
	return ordered.Map(context.Background(), runtime.GOMAXPROCS(0), read, apply, write)
}

// openTokenizer finds a model directory's tokenizer.
func openTokenizer(dir string) (tokenizer.Tokenizer, error) {
	tok, err := tokenizer.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("--prompt needs the model's tokenizer: %w (or use --prompt-ids)", err)
	}
	return tok, nil
}
