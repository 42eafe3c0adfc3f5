package plots

import (
	"fmt"
	"io"

	"gonum.org/v1/plot/vg/vgimg"

	"github.com/minitron/minitron/diskio"
)

// saveCanvas writes img to path as a PNG, atomically.
func saveCanvas(img *vgimg.Canvas, path string) error {
	err := diskio.WriteAtomic(path, func(w io.Writer) error {
		_, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w)
		return err
	})
	if err != nil {
		return fmt.Errorf("plots: writing %s: %w", path, err)
	}
	return nil
}
