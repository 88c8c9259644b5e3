/** Where a benchmark ran: recorded with every result file. */
import { cpus, release } from 'node:os';
import { execa } from 'execa';

export interface Machine {
  date: string;
  kernel: string;
  nft: string;
  node: string;
  cpus: number;
}

export async function machine(): Promise<Machine> {
  const nft = await execa('nft', ['--version'], { reject: false });
  return {
    date: new Date().toISOString().slice(0, 10),
    kernel: release(),
    nft: /v(\S+)/.exec(nft.stdout)?.[1] ?? 'unknown',
    node: process.versions.node,
    cpus: cpus().length,
  };
}
