//go:build !linux

package lpm

func adviseHuge(b []byte) {}

func mapTbl24() *[1 << 24]uint32 { return nil }
