#include "textflag.h"

// func Read(p unsafe.Pointer)
TEXT ·Read(SB), NOSPLIT, $0-8
	MOVD p+0(FP), R0
	PRFM (R0), PLDL1KEEP
	RET

// func Write(p unsafe.Pointer)
TEXT ·Write(SB), NOSPLIT, $0-8
	MOVD p+0(FP), R0
	PRFM (R0), PSTL1KEEP
	RET

// func Lines(addrs []uintptr)
TEXT ·Lines(SB), NOSPLIT, $0-24
	MOVD addrs_base+0(FP), R1
	MOVD addrs_len+8(FP), R2
	CBZ R2, done
loop:
	MOVD.P 8(R1), R0
	PRFM (R0), PLDL1KEEP
	SUB $1, R0, R0
	PRFM (R0), PSTL1KEEP
	SUB $1, R2, R2
	CBNZ R2, loop
done:
	RET
