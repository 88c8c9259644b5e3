/**
 * The e2e scenarios on a kind cluster (kube-proxy disabled, nftproxy deployed from config/).
 * kind/e2e creates the cluster and runs this suite; without Docker, kind or the cluster it
 * skips, saying why. The same scenarios run on every machine in e2e/netns.
 */
import { scenarios } from '../scenarios.js';
import { KindCluster, kindUnavailable } from './cluster.js';

describe('e2e: scenarios on a kind cluster', function () {
  this.timeout(300_000);
  let cluster: KindCluster | undefined;

  before(async function () {
    const why = await kindUnavailable();
    if (why) {
      console.log(`      kind suite skipped: ${why}`);
      return this.skip();
    }
    cluster = await KindCluster.create();
  });

  afterEach(async function () {
    if (cluster && this.currentTest?.state === 'failed') console.log(await KindCluster.logs());
  });

  after(async () => {
    if (cluster && !process.env.KEEP_E2E) await KindCluster.cleanup();
  });

  scenarios(() => cluster!);
});
