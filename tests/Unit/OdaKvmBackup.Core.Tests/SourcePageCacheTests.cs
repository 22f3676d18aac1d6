using System.Diagnostics;
using System.Globalization;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>
/// A backup reads whole disks: it must not push the host's own working set (an ODA host runs databases) out of the
/// page cache. SparseCopy reads the source with O_DIRECT, so a copy or a verification of a disk on a real file
/// system (ext4 or XFS under /var/tmp, not tmpfs) leaves none of the disk's pages cached. Measured with fincore.
/// </summary>
public sealed class SourcePageCacheTests : IDisposable
{
    private const int MiB = 1 << 20;
    private readonly string _folder = Path.Combine("/var/tmp", $"sourcecache-tests-{Guid.NewGuid():N}");

    public SourcePageCacheTests() => Directory.CreateDirectory(_folder);

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    [Fact]
    public async Task Copy_leaves_no_page_of_the_source_in_the_page_cache()
    {
        var source = UncachedImage("vdisk");

        var result = await CopyInto(source, "copy");

        Assert.True(result.SourceReadDirectly, "the source was read through the page cache");
        Assert.Equal(0, CachedBytes(source)); // before the comparison below reads it through the cache
        Assert.True(Files.SameBytes(source, Path.Combine(_folder, "copy")), "the copy differs from the source");
    }

    [Fact]
    public async Task Verification_leaves_no_page_of_the_file_in_the_page_cache()
    {
        var source = UncachedImage("vdisk");

        await SparseCopy.DigestListAsync(source, null, CancellationToken.None);

        Assert.Equal(0, CachedBytes(source));
    }

    [Fact]
    public async Task Size_that_is_not_a_multiple_of_4_KiB_is_copied_exactly_past_the_cache()
    {
        var source = Path.Combine(_folder, "odd");
        Files.Image(source, 3L * MiB + 123, [(5, 4096), (MiB - 10, 20), (3L * MiB + 100, 23)], allocate: true);

        var result = await CopyInto(source, "copy");

        Assert.True(result.SourceReadDirectly, "the source was read through the page cache");
        Assert.True(Files.SameBytes(source, Path.Combine(_folder, "copy")), "the copy differs from the source");
        Assert.Equal(3L * MiB + 123, result.SizeBytes);
        Assert.Equal((await SparseCopy.DigestListAsync(source, null, CancellationToken.None)).Sha256, result.Digests.Sha256);
    }

    [Fact]
    public async Task Sparse_file_with_data_at_odd_places_is_copied_exactly_past_the_cache()
    {
        var source = Path.Combine(_folder, "sparse");
        // Extents that start and end inside chunks, two in one chunk, one across a chunk boundary, a short last chunk.
        Files.Image(source, 37L * MiB + 4096 + 512,
            [(7, 3), (MiB + 4096 * 3 + 1, 5000), (MiB + 900 * 1024, 300 * 1024), (16L * MiB - 1, 2), (30L * MiB + 77, 3 * MiB),
                (37L * MiB + 4096 + 500, 12)]);

        var result = await CopyInto(source, "copy");

        Assert.True(result.SourceReadDirectly, "the source was read through the page cache");
        Assert.True(Files.SameBytes(source, Path.Combine(_folder, "copy")), "the copy differs from the source");
        Assert.Equal((await SparseCopy.DigestListAsync(source, null, CancellationToken.None)).Sha256, result.Digests.Sha256);
    }

    [Fact]
    public async Task Block_device_whose_size_is_not_a_multiple_of_4_KiB_is_copied_exactly_past_the_cache()
    {
        // A device of 512-byte sectors (a loop device here, an LV on a host): its last direct read asks past its end.
        var image = Path.Combine(_folder, "lv.img");
        Files.Image(image, 9L * MiB + 1536, [(0, 100), (4L * MiB - 5, 4096), (9L * MiB + 1000, 536)]);
        using var device = LoopDevice.Attach(image);

        var result = await CopyInto(device.Path, "copy");

        Assert.True(result.SourceReadDirectly, "the device was read through the page cache");
        Assert.Equal(9L * MiB + 1536, result.SizeBytes);
        Assert.True(Files.SameBytes(image, Path.Combine(_folder, "copy")), "the copy differs from the device");
    }

    [Fact]
    public async Task Source_on_a_file_system_that_refuses_O_DIRECT_is_read_through_the_cache_and_copied_exactly()
    {
        // ramfs refuses O_DIRECT (EINVAL), as tmpfs did before Linux 6.6 and some FUSE file systems do. A mount of the
        // test's own (the suite runs as root).
        var folder = Path.Combine(_folder, "ramfs");
        Directory.CreateDirectory(folder);
        Run("mount", "-t", "ramfs", "-o", "mode=0700", "ramfs", folder);
        try
        {
            Assert.Equal("ramfs", Run("stat", "-f", "-c", "%T", folder).Trim());
            var source = Path.Combine(folder, "disk");
            Files.Image(source, 5L * MiB + 123, [(0, 4096), (2L * MiB + 11, 70000), (5L * MiB + 100, 23)]);

            var result = await CopyInto(source, "copy");

            Assert.False(result.SourceReadDirectly, "ramfs accepted O_DIRECT: this test no longer shows the fallback");
            Assert.True(Files.SameBytes(source, Path.Combine(_folder, "copy")), "the copy differs from the source");
            Assert.Equal((await SparseCopy.DigestListAsync(source, null, CancellationToken.None)).Sha256, result.Digests.Sha256);
        }
        finally
        {
            Run("umount", folder);
        }
    }

    private async Task<CopyResult> CopyInto(string source, string name)
    {
        var store = new LocalBackupStore(_folder);
        await using var writer = await store.CreateFileAsync(name, CancellationToken.None);
        return await SparseCopy.CopyAsync(source, writer, null, 0, null, CancellationToken.None);
    }

    /// <summary>A 24 MiB image with data in three places (one at an odd offset), on a file system that caches pages,
    /// written, fsynced and dropped from the cache.</summary>
    private string UncachedImage(string name)
    {
        var type = Run("stat", "-f", "-c", "%T", _folder).Trim();
        Assert.True(type != "tmpfs", $"precondition: {_folder} is on a disk file system, not {type}");
        var path = Path.Combine(_folder, name);
        Files.Image(path, 24L * MiB, [(0, 3 * MiB), (9L * MiB + 123, 5 * MiB), (24L * MiB - 4096, 4096)], allocate: true);
        using (var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read))
            SparseCopy.DropFromCache(handle);
        Assert.Equal(0, CachedBytes(path)); // precondition: nothing cached before the copy
        return path;
    }

    /// <summary>The bytes of the file that are in the page cache: `fincore --bytes --noheadings --output RES`.</summary>
    private static long CachedBytes(string path) =>
        long.Parse(Run("fincore", "--bytes", "--noheadings", "--output", "RES", path).Trim(), CultureInfo.InvariantCulture);

    private static string Run(string program, params string[] args)
    {
        var start = new ProcessStartInfo(program, args) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEnd();
        var error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{program} {string.Join(' ', args)} failed ({process.ExitCode}): {error}");
        return output;
    }
}
