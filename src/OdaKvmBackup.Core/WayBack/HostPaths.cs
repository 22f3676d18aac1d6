using System.Runtime.InteropServices;

namespace OdaKvmBackup.Core.WayBack;

/// <summary>Paths as the kernel sees them, for comparisons that a symlink must not fool.</summary>
internal static partial class HostPaths
{
    /// <summary>Every disk file and backing image of every domain on the host (saved and, when running, live
    /// definitions), as real paths. A domain undefined while this reads uses nothing any more and is skipped.</summary>
    public static async Task<IReadOnlySet<string>> ChainFilesOfAllDomainsAsync(VirshClient virsh, CancellationToken ct)
    {
        var files = new HashSet<string>(StringComparer.Ordinal);
        var running = (await virsh.ListRunningDomainsAsync(ct).ConfigureAwait(false)).ToHashSet(StringComparer.Ordinal);
        foreach (var domain in await virsh.ListAllDomainsAsync(ct).ConfigureAwait(false))
        {
            try
            {
                var xmls = new List<string> { await virsh.DumpXmlAsync(domain, inactive: true, ct).ConfigureAwait(false) };
                if (running.Contains(domain))
                    xmls.Add(await virsh.DumpXmlAsync(domain, inactive: false, ct).ConfigureAwait(false));
                foreach (var disk in xmls.SelectMany(x => DomainXml.Parse(x).Disks))
                {
                    foreach (var file in new[] { disk.Source }.Concat(disk.BackingChain).OfType<string>())
                        files.Add(Real(file));
                }
            }
            catch (BackupException ex) when (ex.ErrorId == ErrorIds.DomainNotFound)
            {
                // undefined meanwhile: it uses nothing any more
            }
        }
        return files;
    }

    /// <summary>The path with every symlink resolved (realpath); for a path that does not exist, its folder's real
    /// path and its name; the path normalized when even that does not exist.</summary>
    public static string Real(string path)
    {
        var full = FileSystemPaths.Normalize(path);
        if (RealPath(full) is { } real)
            return real;
        var folder = Path.GetDirectoryName(full);
        return folder is not null && RealPath(folder) is { } realFolder ? FileSystemPaths.JoinChecked(realFolder, Path.GetFileName(full)) : full;
    }

    /// <summary>Bytes of the file the file system holds as data (its SEEK_DATA extents): the whole size for a fully
    /// allocated file, about the data for a sparse one; -1 when the file cannot be read.</summary>
    public static long AllocatedBytes(string path)
    {
        try
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            var fd = (int)handle.DangerousGetHandle();
            var size = RandomAccess.GetLength(handle);
            long total = 0;
            for (long position = 0; position < size;)
            {
                var data = LSeek(fd, position, SeekData);
                if (data < 0)
                    break;
                var hole = LSeek(fd, data, SeekHole);
                if (hole < 0 || hole > size)
                    hole = size;
                total += hole - data;
                position = hole;
            }
            return total;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return -1;
        }
    }

    private const int SeekData = 3;
    private const int SeekHole = 4;

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static partial long LSeek(int fd, long offset, int whence);

    private static string? RealPath(string path)
    {
        var result = RealPathNative(path, IntPtr.Zero);
        if (result == IntPtr.Zero)
            return null;
        try
        {
            return Marshal.PtrToStringUTF8(result);
        }
        finally
        {
            Free(result);
        }
    }

    [LibraryImport("libc", EntryPoint = "realpath", StringMarshalling = StringMarshalling.Utf8)]
    private static partial IntPtr RealPathNative(string path, IntPtr resolved);

    [LibraryImport("libc", EntryPoint = "free")]
    private static partial void Free(IntPtr pointer);
}
