/**
 * @kernel The e2e scenarios on a node in network namespaces: the same scenarios as the kind
 * suite (e2e/kind), here on every machine where the tests run as root.
 */
import assert from 'node:assert/strict';
import { kernelTestsPossible } from '../../test/support/netns.js';
import { scenarios } from '../scenarios.js';
import { NetnsCluster } from './cluster.js';

describe('@kernel e2e: scenarios on a node in network namespaces', function () {
  this.timeout(120_000);
  let cluster: NetnsCluster | undefined;

  before(async function () {
    if (kernelTestsPossible()) return this.skip();
    cluster = await NetnsCluster.create();
  });

  after(async () => {
    await cluster?.destroy();
  });

  scenarios(() => cluster!);

  it('logged no error while running them', () => {
    assert.deepEqual(cluster!.errors(), []);
  });
});
