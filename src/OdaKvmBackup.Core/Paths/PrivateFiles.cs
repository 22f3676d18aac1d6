using System.Runtime.InteropServices;

namespace OdaKvmBackup.Core.Paths;

/// <summary>
/// Local files and folders as the module creates them: private to their owner (folders 0700, files 0600, set
/// explicitly so the umask does not matter, since a backup holds whole disks), and durable (written, fsynced,
/// renamed into place, and the folder fsynced, so a power cut leaves the old or the new file, never none).
/// </summary>
internal static partial class PrivateFiles
{
    public const UnixFileMode FolderMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    public const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>Creates the folder and its missing parents, each 0700; folders that exist are left as they are.</summary>
    public static void CreateFolder(string path)
    {
        var full = Path.GetFullPath(path);
        if (Directory.Exists(full))
            return;
        var parent = Path.GetDirectoryName(full);
        if (parent is not null)
            CreateFolder(parent);
        try
        {
            Directory.CreateDirectory(full, FolderMode);
        }
        catch (IOException) when (Directory.Exists(full))
        {
            return; // made meanwhile by someone else: theirs
        }
        File.SetUnixFileMode(full, FolderMode);
        FsyncDirectory(parent ?? "/");
    }

    /// <summary>Opens a new file 0600 for writing; fails if anything (a file, a planted symlink) is at that path.</summary>
    public static FileStream CreateNew(string path, FileShare share = FileShare.None)
    {
        var stream = new FileStream(path, new FileStreamOptions
        {
            Mode = System.IO.FileMode.CreateNew,
            Access = FileAccess.ReadWrite,
            Share = share,
            UnixCreateMode = FileMode,
            BufferSize = 0,
        });
        File.SetUnixFileMode(stream.SafeFileHandle, FileMode);
        return stream;
    }

    /// <summary>Replaces (or creates) a file with <paramref name="content"/> so that a crash at any point leaves the
    /// old content or the new, never a mix or nothing.</summary>
    public static void WriteAtomically(string path, ReadOnlySpan<byte> content)
    {
        var folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        var temp = Paths.BackupNames.AtomicWriteTemp(path);
        try
        {
            using (var stream = CreateNew(temp))
            {
                stream.Write(content);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
        FsyncDirectory(folder);
    }

    /// <summary>Deletes a file, durably (its folder is fsynced).</summary>
    public static void Delete(string path)
    {
        if (!File.Exists(path))
            return;
        File.Delete(path);
        FsyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    /// <summary>fsync of a folder: makes the creation, rename or removal of its entries durable.</summary>
    public static void FsyncDirectory(string folder)
    {
        var fd = Open(folder, ORdOnly | ODirectory | OCloExec);
        if (fd < 0)
            throw new IOException($"Cannot open the folder '{folder}' to sync it (errno {Marshal.GetLastPInvokeError()}).");
        try
        {
            if (Fsync(fd) != 0)
                throw new IOException($"Cannot sync the folder '{folder}' (errno {Marshal.GetLastPInvokeError()}).");
        }
        finally
        {
            _ = Close(fd);
        }
    }

    private const int ORdOnly = 0;
    private const int ODirectory = 0x10000;
    private const int OCloExec = 0x80000;

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);
}
