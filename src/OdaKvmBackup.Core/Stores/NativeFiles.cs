using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace OdaKvmBackup.Core.Stores;

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

    /// <summary>Opens an existing file for writing in place: never created, never truncated (no O_CREAT, no
    /// O_TRUNC), a symbolic link refused (ELOOP), a FIFO or socket refused without waiting (ENXIO).</summary>
    public static SafeFileHandle OpenExistingForWriteNoFollow(string path)
    {
        var fd = Open(path, ORdWr | ONonBlock | ONoFollow | OCloExec);
        if (fd >= 0)
            return new SafeFileHandle(fd, ownsHandle: true);
        var errno = Marshal.GetLastPInvokeError();
        throw errno switch
        {
            ENoEnt => SmallFiles.NotFound(path),
            ELoop => SmallFiles.NotAStoredCopy(path, "is a symbolic link, not a regular file", NotWritten),
            ENxIo => SmallFiles.NotAStoredCopy(path, "is a FIFO or a socket, not a regular file", NotWritten),
            EIsDir => SmallFiles.NotAStoredCopy(path, "is a folder, not a regular file", NotWritten),
            EAcces => new UnauthorizedAccessException($"Access to the path '{path}' is denied."),
            _ => new IOException($"Cannot open '{path}' for writing: {Marshal.GetPInvokeErrorMessage(errno)}.", errno),
        };
    }

    private static Status Read(byte* output) =>
        new((uint)*(int*)(output + 4), *(uint*)(output + 8), *(long*)(output + 16));

    private const string NotWritten = "nothing was written to it";
    private const int ENoEnt = 2, ENxIo = 6, EAcces = 13, ENotDir = 20, EIsDir = 21, ELoop = 40;
    private const int ORdOnly = 0, ORdWr = 2, ONonBlock = 0x800, OCloExec = 0x80000;

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
