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

        var store = new LocalBackupStore(_folder);
        await using (var writer = await store.CreateFileAsync("copy", CancellationToken.None))
            await SparseCopy.CopyAsync(source, writer, null, 0, null, CancellationToken.None);

        Assert.True(Files.SameBytes(source, Path.Combine(_folder, "copy")), "the copy differs from the source");
        Assert.Equal(0, CachedBytes(source));
    }

    [Fact]
    public async Task Verification_leaves_no_page_of_the_file_in_the_page_cache()
    {
        var source = UncachedImage("vdisk");

        await SparseCopy.DigestListAsync(source, null, CancellationToken.None);

        Assert.Equal(0, CachedBytes(source));
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
