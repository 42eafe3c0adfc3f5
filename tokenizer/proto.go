package tokenizer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// A minimal protobuf wire-format reader for the SentencePiece ModelProto:
// only the fields the encoder needs are decoded, everything else is skipped.

var errTruncated = errors.New("truncated protobuf")

type pbReader struct {
	b []byte
}

func (r *pbReader) varint() (uint64, error) {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		return 0, errTruncated
	}
	r.b = r.b[n:]
	return v, nil
}

// next returns the next field number, wire type and, for length-delimited
// fields, the payload; for varints the value; for fixed32 the bits.
func (r *pbReader) next() (field int, wire int, val uint64, payload []byte, err error) {
	key, err := r.varint()
	if err != nil {
		return 0, 0, 0, nil, err
	}
	field, wire = int(key>>3), int(key&7)
	switch wire {
	case 0:
		val, err = r.varint()
	case 1:
		if len(r.b) < 8 {
			return 0, 0, 0, nil, errTruncated
		}
		val, r.b = binary.LittleEndian.Uint64(r.b), r.b[8:]
	case 2:
		var n uint64
		if n, err = r.varint(); err != nil {
			return
		}
		if n > uint64(len(r.b)) {
			return 0, 0, 0, nil, errTruncated
		}
		payload, r.b = r.b[:n], r.b[n:]
	case 5:
		if len(r.b) < 4 {
			return 0, 0, 0, nil, errTruncated
		}
		val, r.b = uint64(binary.LittleEndian.Uint32(r.b)), r.b[4:]
	default:
		return 0, 0, 0, nil, fmt.Errorf("unsupported protobuf wire type %d", wire)
	}
	return
}

// Piece types of the ModelProto.
const (
	typeNormal      = 1
	typeUnknown     = 2
	typeControl     = 3
	typeUserDefined = 4
	typeUnused      = 5
	typeByte        = 6
)

// Model types of the TrainerSpec.
const (
	modelUnigram = 1
	modelBPE     = 2
	modelWord    = 3
	modelChar    = 4
)

type protoPiece struct {
	piece string
	score float32
	typ   int
}

type protoModel struct {
	pieces []protoPiece
	// trainer spec
	modelType                     int
	byteFallback, treatWSAsSuffix bool
	unkID, bosID, eosID, padID    int
	unkSurface                    string
	hasUnkSurface                 bool
	// normalizer spec
	normName                      string
	charsmap                      []byte
	addDummyPrefix, removeExtraWS bool
	escapeWS                      bool
	hasDenormalizer               bool
}

func parseModelProto(b []byte) (*protoModel, error) {
	m := &protoModel{modelType: modelUnigram, unkID: 0, bosID: 1, eosID: 2, padID: -1,
		addDummyPrefix: true, removeExtraWS: true, escapeWS: true, unkSurface: " \u2047 "}
	r := pbReader{b}
	for len(r.b) > 0 {
		f, w, _, p, err := r.next()
		if err != nil {
			return nil, err
		}
		if w != 2 {
			continue
		}
		switch f {
		case 1:
			pc, err := parsePiece(p)
			if err != nil {
				return nil, fmt.Errorf("piece %d: %w", len(m.pieces), err)
			}
			m.pieces = append(m.pieces, pc)
		case 2:
			if err := m.parseTrainer(p); err != nil {
				return nil, fmt.Errorf("trainer_spec: %w", err)
			}
		case 3:
			if err := m.parseNormalizer(p); err != nil {
				return nil, fmt.Errorf("normalizer_spec: %w", err)
			}
		case 5:
			m.hasDenormalizer = len(p) > 0
		}
	}
	return m, nil
}

func parsePiece(b []byte) (protoPiece, error) {
	pc := protoPiece{typ: typeNormal}
	r := pbReader{b}
	for len(r.b) > 0 {
		f, w, v, p, err := r.next()
		if err != nil {
			return pc, err
		}
		switch {
		case f == 1 && w == 2:
			pc.piece = string(p)
		case f == 2 && w == 5:
			pc.score = math.Float32frombits(uint32(v))
		case f == 3 && w == 0:
			pc.typ = int(v)
		}
	}
	return pc, nil
}

func (m *protoModel) parseTrainer(b []byte) error {
	r := pbReader{b}
	for len(r.b) > 0 {
		f, w, v, p, err := r.next()
		if err != nil {
			return err
		}
		if w == 0 {
			switch f {
			case 3:
				m.modelType = int(v)
			case 35:
				m.byteFallback = v != 0
			case 24:
				m.treatWSAsSuffix = v != 0
			case 40:
				m.unkID = int(int32(v))
			case 41:
				m.bosID = int(int32(v))
			case 42:
				m.eosID = int(int32(v))
			case 43:
				m.padID = int(int32(v))
			}
		} else if w == 2 && f == 44 {
			m.unkSurface, m.hasUnkSurface = string(p), true
		}
	}
	return nil
}

func (m *protoModel) parseNormalizer(b []byte) error {
	r := pbReader{b}
	for len(r.b) > 0 {
		f, w, v, p, err := r.next()
		if err != nil {
			return err
		}
		switch {
		case f == 1 && w == 2:
			m.normName = string(p)
		case f == 2 && w == 2:
			m.charsmap = append([]byte(nil), p...)
		case f == 3 && w == 0:
			m.addDummyPrefix = v != 0
		case f == 4 && w == 0:
			m.removeExtraWS = v != 0
		case f == 5 && w == 0:
			m.escapeWS = v != 0
		}
	}
	return nil
}
