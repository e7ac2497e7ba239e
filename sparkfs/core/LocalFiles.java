package sparkfs.core;

import java.io.IOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.attribute.PosixFilePermission;
import java.util.EnumSet;
import java.util.Set;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.ChecksumFs;
import org.apache.hadoop.fs.DelegateToFileSystem;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FsConstants;
import org.apache.hadoop.fs.FsServerDefaults;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;
import org.apache.hadoop.fs.local.LocalConfigKeys;
import org.apache.hadoop.fs.permission.FsPermission;
import org.apache.hadoop.io.nativeio.NativeIO;

/**
 * Hadoop's local file system without the processes it starts: a local session's {@code file:}
 * scheme, for both of Hadoop's APIs (session.py names these classes in {@code fs.file.impl} and
 * {@code fs.AbstractFileSystem.file.impl}).
 *
 * Without Hadoop's native library, {@code RawLocalFileSystem} runs {@code chmod} in a process of
 * its own for every file it creates and every folder it makes, and {@code readlink} for every
 * {@code getFileLinkStatus}, which {@code FileContext.rename} calls on both ends of every Delta
 * commit (and which never finds a link there: it is given the path as a {@code file:} URI).
 * {@link Raw} does both with {@code java.nio} in the JVM: the same permission bits, and the same
 * status for a path that is not a symbolic link. A real link, a mode with more than the nine
 * rwx bits, a file system without POSIX permissions, or a machine with the native library all
 * take Hadoop's own code, so their behaviour is unchanged.
 */
public final class LocalFiles {
    private LocalFiles() {
    }

    /** The raw local file system, with the link check and {@code setPermission} in the JVM. */
    public static class Raw extends RawLocalFileSystem {
        @Override
        public FileStatus getFileLinkStatus(Path f) throws IOException {
            boolean link;
            try {
                link = Files.isSymbolicLink(pathToFile(f).toPath());
            } catch (InvalidPathException e) {
                link = true; // a name java.nio cannot hold: Hadoop's own code decides
            }
            // Not a link: Hadoop's own code returns getFileStatus(f) too (after its readlink found none).
            return link ? super.getFileLinkStatus(f) : getFileStatus(f);
        }

        @Override
        public void setPermission(Path p, FsPermission permission) throws IOException {
            int mode = permission.toShort();
            if (NativeIO.isAvailable() || (mode & ~0777) != 0) {
                super.setPermission(p, permission);
                return;
            }
            try {
                Files.setPosixFilePermissions(pathToFile(p).toPath(), posix(mode));
            } catch (UnsupportedOperationException | InvalidPathException e) {
                super.setPermission(p, permission); // not a POSIX file system
            }
        }

        static Set<PosixFilePermission> posix(int mode) {
            PosixFilePermission[] bits = {  // from 0400 down to 0001
                PosixFilePermission.OWNER_READ, PosixFilePermission.OWNER_WRITE, PosixFilePermission.OWNER_EXECUTE,
                PosixFilePermission.GROUP_READ, PosixFilePermission.GROUP_WRITE, PosixFilePermission.GROUP_EXECUTE,
                PosixFilePermission.OTHERS_READ, PosixFilePermission.OTHERS_WRITE, PosixFilePermission.OTHERS_EXECUTE,
            };
            Set<PosixFilePermission> set = EnumSet.noneOf(PosixFilePermission.class);
            for (int i = 0; i < bits.length; i++) {
                if ((mode & (0400 >> i)) != 0) {
                    set.add(bits[i]);
                }
            }
            return set;
        }
    }

    /**
     * {@code fs.file.impl}: Hadoop's checksummed {@code LocalFileSystem} over {@link Raw}, with the
     * rename rule of the class pyspark's jars register for {@code file:} (Hive's
     * {@code ProxyLocalFileSystem}): a rename onto an existing file fails (returns false) and
     * leaves it in place.
     */
    public static class Checksummed extends org.apache.hadoop.fs.LocalFileSystem {
        public Checksummed() {
            super(new Raw());
        }

        @Override
        public boolean rename(Path src, Path dst) throws IOException {
            return !isFile(dst) && super.rename(src, dst);
        }
    }

    /** The {@code FileContext} side of {@link Raw}: what Hadoop's {@code RawLocalFs} is to its own. */
    public static class RawFs extends DelegateToFileSystem {
        public RawFs(URI uri, Configuration conf) throws IOException, URISyntaxException {
            super(FsConstants.LOCAL_FS_URI, new Raw(), conf, FsConstants.LOCAL_FS_URI.getScheme(), false);
        }

        @Override
        public int getUriDefaultPort() {
            return -1; // as RawLocalFs: no port
        }

        @Override
        @SuppressWarnings("deprecation")
        public FsServerDefaults getServerDefaults() throws IOException {
            return LocalConfigKeys.getServerDefaults();
        }

        @Override
        public FsServerDefaults getServerDefaults(Path f) throws IOException {
            return LocalConfigKeys.getServerDefaults();
        }

        @Override
        public boolean isValidName(String src) {
            return true; // as RawLocalFs: any name the local file system takes
        }
    }

    /** {@code fs.AbstractFileSystem.file.impl}: checksummed, as Hadoop's {@code LocalFs}. */
    public static class Fs extends ChecksumFs {
        public Fs(URI uri, Configuration conf) throws IOException, URISyntaxException {
            super(new RawFs(uri, conf));
        }
    }
}
