package protocol

// The spec's tables are also held against code outside this package (the
// transport's constants, the timers of both ends) by tests in package
// protocol_test, which cannot import this package's test helpers directly.
var (
	ReadSpec  = readSpec
	SpecTable = specTable
	CodeCell  = codeCell
)
