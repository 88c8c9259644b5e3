/** The nftproxy CLI, compiled with the benchmarks: `node dist-bench/bench/lib/cli.js run ...`. */
import { main } from '../../src/cli/main.js';

process.exitCode = await main(process.argv);
