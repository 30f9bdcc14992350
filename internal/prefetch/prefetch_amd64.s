#include "textflag.h"

// func Read(p unsafe.Pointer)
TEXT ·Read(SB), NOSPLIT, $0-8
	MOVQ p+0(FP), AX
	PREFETCHT0 (AX)
	RET

// func Write(p unsafe.Pointer)
TEXT ·Write(SB), NOSPLIT, $0-8
	MOVQ p+0(FP), AX
	// PREFETCHW (AX): 0F 0D /1. The Go assembler has no mnemonic for it;
	// CPUs without the instruction decode it as a NOP.
	BYTE $0x0F; BYTE $0x0D; BYTE $0x08
	RET
