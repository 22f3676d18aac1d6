using System.Diagnostics;

namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>
/// A real XFS with reflink, of the tests' own: a sparse 512 MiB image made with <c>mkfs.xfs -m reflink=1</c> in a
/// temp folder, attached to a free loop device and mounted; unmounted and detached by the exact device on Dispose.
/// Installs xfsprogs with apt when missing. Needs root and a free loop device: when either is missing, the
/// constructor throws and the tests that use it fail, saying why; they are never skipped.
/// </summary>
internal sealed class XfsFileSystem : IDisposable
{
    private readonly TempFolder _folder = new("odakvm-xfs");
    private readonly string? _device;

    public XfsFileSystem()
    {
        Mount = _folder.Folder("mnt");
        try
        {
            EnsureXfsprogs();
            var image = _folder.Combine("xfs.img");
            using (var file = File.Create(image))
                file.SetLength(512L << 20);
            Run("mkfs.xfs", "-q", "-m", "reflink=1", image);
            _device = Run("losetup", "--find", "--show", image).Trim();
            if (!_device.StartsWith("/dev/loop", StringComparison.Ordinal))
                throw new InvalidOperationException($"These tests need a real XFS on a loop device: losetup gave '{_device}' for {image}.");
            Run("mount", "-t", "xfs", _device, Mount);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The mount point: an empty XFS with reflink.</summary>
    public string Mount { get; }

    /// <summary>A new folder on the file system.</summary>
    public string Folder(string name) => Directory.CreateDirectory(Path.Combine(Mount, name)).FullName;

    public void Dispose()
    {
        if (_device is not null)
        {
            TryRun("umount", Mount);
            TryRun("losetup", "--detach", _device);
        }
        _folder.Dispose();
    }

    /// <summary>Bytes in use on the file system (statfs, as df counts them).</summary>
    public long UsedBytes()
    {
        Run("sync", "-f", Mount);
        var drive = new DriveInfo(Mount);
        return drive.TotalSize - drive.TotalFreeSpace;
    }

    private static void EnsureXfsprogs()
    {
        if (File.Exists("/usr/sbin/mkfs.xfs") || File.Exists("/sbin/mkfs.xfs"))
            return;
        var (code, output) = TestSshServer.Run("apt-get", ["install", "-y", "--no-install-recommends", "xfsprogs"], ("DEBIAN_FRONTEND", "noninteractive"));
        if (code != 0)
        {
            TestSshServer.Run("apt-get", ["update", "-qq"], ("DEBIAN_FRONTEND", "noninteractive"));
            (code, output) = TestSshServer.Run("apt-get", ["install", "-y", "--no-install-recommends", "xfsprogs"], ("DEBIAN_FRONTEND", "noninteractive"));
        }
        if (code != 0)
            throw new InvalidOperationException($"These tests need a real XFS: 'apt-get install xfsprogs' failed ({code}):\n{output}");
    }

    private static string Run(string program, params string[] arguments)
    {
        var (code, output, error) = TryRun(program, arguments);
        if (code != 0)
        {
            throw new InvalidOperationException(
                $"These tests need a real XFS on a loop device (root, a free /dev/loopN): '{program} {string.Join(' ', arguments)}' failed ({code}): {error.Trim()}");
        }
        return output;
    }

    private static (int Code, string Output, string Error) TryRun(string program, params string[] arguments)
    {
        var start = new ProcessStartInfo(program, arguments) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        try
        {
            using var process = Process.Start(start)!;
            var error = process.StandardError.ReadToEndAsync();
            var output = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return (process.ExitCode, output, error.Result);
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            return (-1, "", ex.Message);
        }
    }
}
