using System.Runtime.InteropServices;

namespace OdaKvmBackup.Core.Run;

/// <summary>
/// After SIGHUP the terminal is usually gone: every write to it fails (EIO), and pwsh ends itself at once
/// (Environment.FailFast: no cleanup, so a rollback under way would be cut short) when it cannot write an error
/// there. So every descriptor of the process that is that hung-up terminal (stdin, stdout, stderr, and the copies
/// .NET's console made of them) is pointed at /dev/null, as nohup does, and while a run is active a write to
/// Console.Out or Console.Error that fails because the terminal hung up is dropped instead of thrown (it can come
/// before the SIGHUP handler runs). Files, pipes and a terminal still there are left alone, and their failures are
/// thrown as before.
/// </summary>
internal static partial class HungUpTerminal
{
    private const int EIO = 5;
    private static readonly object Gate = new();
    private static (TextWriter Out, TextWriter Error)? s_original;
    private static volatile bool s_gone;

    /// <summary>True once a hung-up terminal was let go of.</summary>
    public static bool Gone => s_gone;

    /// <summary>True when <paramref name="fd"/> is a terminal that has hung up.</summary>
    public static unsafe bool IsHungUp(int fd)
    {
        var termios = stackalloc byte[256]; // struct termios is 60 bytes on Linux
        return TcGetAttr(fd, termios) != 0 && Marshal.GetLastPInvokeError() == EIO;
    }

    /// <summary>Points every descriptor that is a terminal now hung up at /dev/null.</summary>
    public static void Detach()
    {
        using var devNull = File.OpenHandle("/dev/null", FileMode.Open, FileAccess.ReadWrite);
        var target = (int)devNull.DangerousGetHandle();
        foreach (var entry in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            // Only a descriptor that answers EIO as a terminal is replaced: a hung-up terminal, nothing else.
            if (int.TryParse(Path.GetFileName(entry), out var fd) && fd != target && IsHungUp(fd))
            {
                Dup2(target, fd);
                s_gone = true;
            }
        }
    }

    /// <summary>Guards Console.Out and Console.Error (true), or puts the ones it guarded back (false).</summary>
    public static void GuardConsole(bool on)
    {
        lock (Gate)
        {
            if (on && s_original is null)
            {
                s_original = (Console.Out, Console.Error);
                Console.SetOut(new HangUpProofWriter(Console.Out, () => Gone || IsHungUp(1), Detach));
                Console.SetError(new HangUpProofWriter(Console.Error, () => Gone || IsHungUp(2), Detach));
            }
            else if (!on && s_original is { } original)
            {
                Console.SetOut(original.Out);
                Console.SetError(original.Error);
                s_original = null;
            }
        }
    }

    [LibraryImport("libc", EntryPoint = "tcgetattr", SetLastError = true)]
    private static unsafe partial int TcGetAttr(int fd, byte* termios);

    [LibraryImport("libc", EntryPoint = "dup2", SetLastError = true)]
    private static partial int Dup2(int oldFd, int newFd);
}
