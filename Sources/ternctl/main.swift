// ternctl: the operators' command-line tool. Everything is in the TernCtl library.

import Foundation
import TernCtl

exit(await TernCtl.main(Array(CommandLine.arguments.dropFirst()), io: CtlOutput(echo: true)))
