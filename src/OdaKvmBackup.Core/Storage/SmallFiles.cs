using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace OdaKvmBackup.Core.Storage;

/// <summary>
/// The small files of a set (backup.json, domain.xml) come from a store that may be less protected than the host:
/// they are read only when they are regular files (never a FIFO, which would hang the read, a device, a socket, a
/// folder or a symbolic link out of the store) no larger than their cap. A refusal is BackupSetUnreadable: the
/// catalog reports that set and goes on with the others.
/// </summary>
public static class SmallFiles
{
    /// <summary>backup.json: 64 MiB. It holds a SHA-256 per 16 MiB segment of data of each copy on an SSH server,
    /// about 85 bytes each: 64 MiB is room for some 12 TiB of data, where 1 MiB would refuse a set with more than
    /// 190 GiB of data.</summary>
    public const long ManifestLimit = 64L << 20;

    /// <summary>domain.xml: 4 MiB. A libvirt definition takes a few KiB (tens with many devices).</summary>
    public const long DomainXmlLimit = 4L << 20;

    /// <summary>Any other small file: 1 MiB.</summary>
    public const long OtherLimit = 1L << 20;

    /// <summary>The cap of a small file, by its name.</summary>
    public static long LimitFor(string relativePath) => relativePath[(relativePath.LastIndexOf('/') + 1)..] switch
    {
        Backup.BackupNames.ManifestFileName => ManifestLimit,
        Backup.BackupNames.DomainXmlFileName => DomainXmlLimit,
        _ => OtherLimit,
    };

    /// <summary>What a file whose st_mode is <paramref name="mode"/> is, in words, when it is not a regular file;
    /// null for a regular file.</summary>
    internal static string? NonRegularKind(uint? mode) => (mode & 0xF000) switch
    {
        0x8000 => null,
        0x1000 => "a FIFO (named pipe)",
        0x2000 => "a character device",
        0x4000 => "a folder",
        0x6000 => "a block device",
        0xA000 => "a symbolic link",
        0xC000 => "a socket",
        null => "of a type the server did not say",
        var other => $"of file type 0x{other:X}",
    };

    /// <summary>Throws BackupSetUnreadable unless <paramref name="mode"/> is a regular file's and <paramref name="size"/>
    /// within <paramref name="limit"/>.</summary>
    internal static void Require(string where, uint? mode, long size, long limit)
    {
        if (NonRegularKind(mode) is { } kind)
            throw Refused(where, $"is {kind}, not a regular file");
        if (size > limit)
            throw TooLarge(where, size, limit);
    }

    /// <summary>A file past its cap; <paramref name="size"/> is what it holds, or (read past the cap) at least holds.</summary>
    internal static BackupException TooLarge(string where, long size, long limit) =>
        Refused(where, $"holds {(size > limit + 1 ? Backup.FileSystemPaths.FormatBytes(size) + ", " : "")}more than the {limit >> 20} MiB a {where[(where.LastIndexOf('/') + 1)..]} may hold");

    /// <summary>A set whose small file is not what the module writes: nothing of it was read.</summary>
    internal static BackupException Refused(string where, string what) =>
        new(ErrorIds.BackupSetUnreadable, BackupErrorCategory.SecurityError,
            $"'{where}' {what}: the module writes only regular files of bounded size there, so this set cannot be trusted and nothing of it was read.",
            "Look at the set's folder on its storage (who made that file, and why?); back up again, and remove the folder by hand once inspected.", where);

    /// <summary>A copy (or other file) of a set that is not what the module writes there: it was not read.</summary>
    internal static BackupException NotAStoredCopy(string where, string what) =>
        new(ErrorIds.BackupCopyUnsafe, BackupErrorCategory.SecurityError,
            $"'{where}' {what}: OdaKvmBackup writes every copy as a regular file in its set's own folder, so it was not read.",
            "Look at the set's folder on its storage (who put that there, and why?); use another set, and remove this one by hand once inspected.", where);

    internal static BackupException Unreadable(string where, string why, Exception? inner = null) =>
        new(ErrorIds.BackupSetUnreadable, BackupErrorCategory.InvalidData, $"'{where}' cannot be read: {why}.",
            "Check the storage and the file's permissions; the set cannot be used until it can be read.", where, inner);

    internal static BackupException NotFound(string where) =>
        new(ErrorIds.PathNotFound, BackupErrorCategory.ObjectNotFound, $"'{where}' does not exist.", null, where);

    // ------------------------------------------------------------------ local files

    /// <summary>
    /// Reads a small file of a local store: looked at without following a link (lstat), refused unless it is a
    /// regular file within <paramref name="limit"/>, then opened without following a link and without blocking
    /// (O_NOFOLLOW | O_NONBLOCK: a FIFO swapped in meanwhile cannot hang the open), the open file checked again,
    /// and never read past the cap.
    /// </summary>
    internal static byte[] ReadLocal(string path, long limit)
    {
        try
        {
            using var handle = OpenLocal(path, status => Require(path, status.Mode, status.Size, limit), out var opened);
            var content = new byte[Math.Min(opened.Size, limit) + 1];
            var length = 0;
            int read;
            while (length < content.Length && (read = RandomAccess.Read(handle, content.AsSpan(length), length)) > 0)
                length += read;
            if (length > limit)
                throw TooLarge(path, length, limit); // it grew since it was looked at
            return content[..length];
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw Unreadable(path, ex.Message.TrimEnd('.'), ex);
        }
    }

    /// <summary>
    /// Opens a file of a local store for reading only as what <paramref name="require"/> accepts (it throws
    /// otherwise), looked at twice: by its name without following a link (lstat), then as opened (fstat). The open
    /// follows no link and does not block (O_NOFOLLOW | O_NONBLOCK), so a FIFO swapped in meanwhile cannot hang it.
    /// </summary>
    internal static SafeFileHandle OpenLocal(string path, Action<NativeFiles.Status> require, out NativeFiles.Status opened)
    {
        require(NativeFiles.LStat(path) ?? throw NotFound(path));
        var handle = NativeFiles.OpenNoFollow(path);
        try
        {
            opened = NativeFiles.FStat(handle);
            require(opened);
            return handle;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }
}

/// <summary>
/// What .NET's File and FileInfo do not say: a file's type and owner, without following a link. Read with the
/// runtime's own stat (libSystem.Native, which File uses), whose FileStatus starts Flags, Mode, Uid, Gid, Size in
/// every .NET since Core 1.0; glibc before 2.33 (Oracle Linux 7 and 8) exports no stat or fstat to call directly.
/// </summary>
internal static unsafe partial class NativeFiles
{
    private const int StatusBytes = 256; // more than any FileStatus so far (under 130 bytes)

    internal readonly record struct Status(uint Mode, uint Uid, long Size)
    {
        public UnixFileMode Permissions => (UnixFileMode)(Mode & 0xFFF);
        public bool IsDirectory => (Mode & 0xF000) == 0x4000;
        public bool IsSymbolicLink => (Mode & 0xF000) == 0xA000;
    }

    /// <summary>The entry itself (a link is not followed); null when nothing is there.</summary>
    public static Status? LStat(string path)
    {
        var output = stackalloc byte[StatusBytes];
        if (SystemLStat(path, output) == 0)
            return Read(output);
        var errno = Marshal.GetLastPInvokeError();
        if (errno is ENoEnt or ENotDir)
            return null;
        throw new IOException($"Cannot look at '{path}': {Marshal.GetPInvokeErrorMessage(errno)}.");
    }

    public static Status FStat(SafeFileHandle handle)
    {
        var output = stackalloc byte[StatusBytes];
        if (SystemFStat(handle.DangerousGetHandle(), output) != 0)
            throw new IOException($"Cannot look at an open file: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}.");
        return Read(output);
    }

    /// <summary>The user this process acts as (0: root).</summary>
    public static uint EffectiveUserId() => GetEUid();

    /// <summary>Opens a file for reading; a symbolic link is refused (ELOOP), a FIFO opens without waiting for a
    /// writer, a socket is refused (ENXIO).</summary>
    public static SafeFileHandle OpenNoFollow(string path)
    {
        var fd = Open(path, ORdOnly | ONonBlock | ONoFollow | OCloExec);
        if (fd >= 0)
            return new SafeFileHandle(fd, ownsHandle: true);
        var errno = Marshal.GetLastPInvokeError();
        throw errno switch
        {
            ENoEnt => SmallFiles.NotFound(path),
            ELoop => SmallFiles.Refused(path, "is a symbolic link, not a regular file"),
            ENxIo => SmallFiles.Refused(path, "is a socket, not a regular file"),
            _ => SmallFiles.Unreadable(path, Marshal.GetPInvokeErrorMessage(errno)),
        };
    }

    private static Status Read(byte* output) =>
        new((uint)*(int*)(output + 4), *(uint*)(output + 8), *(long*)(output + 16));

    private const int ENoEnt = 2, ENxIo = 6, ENotDir = 20, ELoop = 40;
    private const int ORdOnly = 0, ONonBlock = 0x800, OCloExec = 0x80000;

    // x86_64 (ODA) and arm64 number O_NOFOLLOW differently.
    private static readonly int ONoFollow = RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm ? 0x8000 : 0x20000;

    [LibraryImport("libSystem.Native", EntryPoint = "SystemNative_LStat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SystemLStat(string path, byte* output);

    [LibraryImport("libSystem.Native", EntryPoint = "SystemNative_FStat", SetLastError = true)]
    private static partial int SystemFStat(nint fd, byte* output);

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "geteuid")]
    private static partial uint GetEUid();
}
