/**
 * Dawn's adapter warnings once, not per process: auto mode does not ask Vulkan for a hardware
 * adapter where no GPU device node exists (the loader and Dawn would print "no valid GPUs" or, with
 * Debian's mesa-vulkan-drivers, Dawn's rejection of lavapipe 22.3 in every process), and where one
 * exists it tells the loader to skip the CPU drivers it would reject anyway. What is left is Dawn's
 * notice about clamping the chosen adapter's limits (src/gpu/device.ts says why it stays).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CPU_VULKAN_DRIVERS, nativeVulkanProbe } from '../../src/gpu/device.ts';
import { testRuntime } from '../setup.ts';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

describe('nativeVulkanProbe', () => {
  it('skips the Vulkan probe without a GPU device node', () => {
    expect(nativeVulkanProbe({}, []).skip).toMatch(/no GPU device node/);
  });

  it('with a device node, asks Vulkan without its CPU drivers (lavapipe, SwiftShader)', () => {
    expect(nativeVulkanProbe({}, ['/dev/dri/renderD128'])).toEqual({ probeEnv: { VK_LOADER_DRIVERS_DISABLE: '*lvp_icd*,*swiftshader*' } });
    expect(CPU_VULKAN_DRIVERS.some((g) => new RegExp(`^${g.replace(/\*/g, '.*')}$`).test('lvp_icd.x86_64.json'))).toBe(true);
    expect(CPU_VULKAN_DRIVERS.some((g) => new RegExp(`^${g.replace(/\*/g, '.*')}$`).test('vk_swiftshader_icd.json'))).toBe(true);
    expect(CPU_VULKAN_DRIVERS.some((g) => new RegExp(`^${g.replace(/\*/g, '.*')}$`).test('nvidia_icd.json'))).toBe(false);
  });

  it('leaves a user who chose Vulkan drivers alone, device node or not', () => {
    for (const key of ['VK_ICD_FILENAMES', 'VK_DRIVER_FILES', 'VK_LOADER_DRIVERS_SELECT', 'VK_LOADER_DRIVERS_DISABLE']) {
      expect(nativeVulkanProbe({ [key]: '/x/lvp_icd.json' }, [])).toEqual({});
      expect(nativeVulkanProbe({ [key]: '/x/lvp_icd.json' }, ['/dev/nvidia0'])).toEqual({});
    }
  });
});

const rt = await testRuntime();
describe.skipIf(!rt)('a process that starts a runtime', () => {
  it('prints no Vulkan loader or adapter-rejection warnings', () => {
    const env = { ...process.env };
    for (const key of ['AUTORESEARCH_GPU', 'VK_ICD_FILENAMES', 'VK_DRIVER_FILES', 'VK_LOADER_DRIVERS_SELECT', 'VK_LOADER_DRIVERS_DISABLE']) delete env[key];
    const p = spawnSync(process.execPath, ['--import', 'tsx', 'test/gpu/fixtures/acquire.ts'], { cwd: REPO_ROOT, encoding: 'utf8', env });
    expect(p.status, p.stderr).toBe(0);
    expect(p.stdout).toMatch(/^gpu: .*\n1,2,3\n$/);
    // e.g. "Warning: Vulkan shaderUniform*ArrayDynamicIndexing required. - While initializing adapter
    // (backend=BackendType::Vulkan)" (lavapipe 22.3 installed), or the loader's "Failed to detect any
    // valid GPUs" and Dawn's "vkEnumeratePhysicalDevices" (no Vulkan device at all)
    expect(p.stderr).not.toMatch(/Vulkan|vkEnumerate|Loader Message|valid GPUs/);
    const lines = p.stderr.split('\n').filter(Boolean);
    expect(lines.filter((l) => !/artificially reduced .* to fit dynamic offset allocation limit/.test(l)), p.stderr).toEqual([]);
    // worth knowing which case ran: lavapipe's ICD is on this machine (Debian's mesa-vulkan-drivers)
    if (existsSync('/usr/share/vulkan/icd.d/lvp_icd.x86_64.json')) console.log('lavapipe ICD present: its rejection warning was avoided');
  });
});
